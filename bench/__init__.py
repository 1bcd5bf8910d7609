"""Thin wrappers: the benchmarks live in ``ringpress.bench`` (``ringpress bench --help``)."""
