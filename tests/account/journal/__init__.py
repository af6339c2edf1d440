"""Tests of multirun.account.journal."""
