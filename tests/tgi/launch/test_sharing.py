"""Leases on a shared container (tgi/launch/sharing.py): real processes, a real directory."""

from __future__ import annotations

import subprocess
import sys

from tgi.launch.sharing import Lease


def test_other_live_holders_are_seen_and_stale_leases_dropped(tmp_path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    try:
        with Lease("c1", root=tmp_path, pid=other.pid), Lease("c1", root=tmp_path, pid=dead_pid):
            with Lease("c1", root=tmp_path) as mine:
                assert mine.others() == [other.pid]
                assert not (tmp_path / "c1" / str(dead_pid)).exists()  # a dead process's lease is removed
                assert Lease("c2", root=tmp_path).others() == []  # another container
            assert not (tmp_path / "c1" / str(mine.pid)).exists()
    finally:
        other.kill()
        other.wait()
    assert Lease("c1", root=tmp_path).others() == []
