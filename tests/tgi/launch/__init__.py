"""Tests of tgi/launch/."""
