"""Benchmarks: scripts run by hand (python bench/NAME.py), and the /proc readers they share."""
