"""Tests of multirun.export."""
