"""The benchmark harness behind `seq2seq bench` (method and results: benchmarks/README.md)."""
