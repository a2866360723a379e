"""Tests of tgi/emulator/."""
