"""GPU usage metering: shared domain pieces (errors, units, windows, config, CLI)."""
