"""Tests of tgi/api/."""
