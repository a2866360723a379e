"""Tests of tgi/pipeline/."""
