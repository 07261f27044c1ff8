"""The benchmarks behind `meter bench ...` and what they need: the load generator, the
warehouse history generator, the reference Faust agents. Each prints JSON with its figure
and a same-run ratio against a plain baseline; none is a timed test (docs/PERFORMANCE.md)."""
