"""Tests of tgi/ops/."""
