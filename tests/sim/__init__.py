"""Tests of multirun.sim."""
