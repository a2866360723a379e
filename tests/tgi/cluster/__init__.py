"""Tests of tgi/cluster/."""
