"""Tests of multirun.api."""
