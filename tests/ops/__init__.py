"""Tests of multirun.ops."""
