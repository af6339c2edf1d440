"""Tests of multirun.account."""
