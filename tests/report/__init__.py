"""Tests of multirun.report."""
