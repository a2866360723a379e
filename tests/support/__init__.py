"""Test support shared by every suite: the emulator and gateway processes, a tiny model directory, Docker fixtures, a local Hub mirror."""
