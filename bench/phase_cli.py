"""The command line every stand-alone bench phase shares: ``python -m bench.<phase> [--quick] [--json]``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable


def run_phase(prog: str, doc: str | None, measure: Callable[..., dict], show: Callable[[dict], None],
              argv: list[str] | None = None) -> int:
    """Measure (``--quick``: fewer requests), then print the result as JSON (``--json``, or when it holds an
    ``error``) or through ``show``."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = measure(quick=args.quick)
    if args.json or "error" in out:
        print(json.dumps(out, indent=1))
    else:
        show(out)
    return 0
