"""Tests of multirun.strategies."""
