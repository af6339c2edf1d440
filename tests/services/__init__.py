"""Tests of multirun.services."""
