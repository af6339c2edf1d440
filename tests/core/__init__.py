"""Tests of multirun.core."""
