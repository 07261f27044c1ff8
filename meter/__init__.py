"""The `meter` command: its parser and dispatch (`cli.py`), the one error boundary every
command runs inside (`boundary.py`), the demo and the worker harness it drives, and
`meter status`. The vocabulary is `core/`, the benchmarks `bench/`."""
