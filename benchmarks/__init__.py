"""Benchmarks: scripts that measure LongTune against a baseline run in the same process/run.

Each script prints its table and the command that reproduces it, and writes a markdown
result (plus a chart) under benchmarks/results/. See benchmarks/README.md.
"""
