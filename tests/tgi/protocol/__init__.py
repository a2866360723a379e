"""Tests of tgi/protocol/."""
