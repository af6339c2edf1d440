"""Tests of multirun.config."""
