"""Tests of multirun.supervisor."""
