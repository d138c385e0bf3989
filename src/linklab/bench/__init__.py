"""Benchmarks: tool parsers (tools), measurements in live namespaces (measure), the
datapaths measured (datapaths), the run that ties them to the results store (runner), the
statistics of repetitions (stats), the verdicts and regression gate (compare), and a saved
run read back against a baseline (baseline)."""
