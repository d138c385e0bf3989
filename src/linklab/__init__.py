"""linklab: connectivity tests and benchmarks for Linux container datapaths."""

__version__ = "0.1.0"
