"""Benchmarks of imageops against the Docker CLI on the real test bed (``bash bench/run.sh``)."""
