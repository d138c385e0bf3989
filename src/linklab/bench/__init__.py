"""Benchmarks: tool parsers (tools), measurements in live namespaces (measure), the
datapaths measured (datapaths) and the run that ties them to the results store (runner).
Statistics live in :mod:`linklab.stats`, baseline comparison in :mod:`linklab.compare`."""
