"""One command per reliability suite:

    python -m tests.reliability.run badinput|faults|soak|security|parsers [--long] [--json FILE]

Without ``--long`` each suite runs at the size CI runs it (tests/reliability/test_*.py); ``--long`` runs the
sizes whose figures go into bench/RESULTS.md. Prints the figures, exits 1 when any case failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.reliability.report import Report

ROOT = Path(__file__).resolve().parents[2]

# suite -> (short, long) sizes
SIZES = {
    "badinput": ({"schemathesis_examples": 100}, {"schemathesis_examples": 5000}),
    "faults": ({"rounds": 1}, {"rounds": 5}),
    "soak": ({"requests": 400, "concurrency": 32}, {"requests": 10_000, "concurrency": 128}),
    "security": ({"timing_rounds": 0}, {"timing_rounds": 2000}),
    "parsers": ({"examples": 60}, {"examples": 2000}),
}


def run_badinput(report: Report, *, schemathesis_examples: int, grammar: str | None) -> None:
    from tests.reliability import badinput
    from tests.reliability.stack import running_stack, unexpected_errors

    with running_stack(grammar=grammar) as stack:
        badinput.run_hand_cases(stack.url, report)
        badinput.run_schemathesis(stack.url, report, examples=schemathesis_examples)
        badinput.still_serving(stack.url, report)
        unexpected = unexpected_errors(stack.gateway.logs())
        report.check(not unexpected, f"gateway logged {len(unexpected)} unexpected errors: {unexpected[:3]}")


def run_faults(report: Report, *, rounds: int, grammar: str | None) -> None:  # no tools: grammars play no part
    from tests.reliability.faults import run_faults as run

    run(report, rounds=rounds)


def run_soak(report: Report, *, requests: int, concurrency: int, grammar: str | None) -> None:
    from tests.reliability.soak import run_soak as run

    run(report, requests=requests, concurrency=concurrency, grammar=grammar)


def run_security(report: Report, *, timing_rounds: int, grammar: str | None) -> None:
    from tests.reliability.security import run_security as run

    run(report, timing_rounds=timing_rounds, grammar=grammar)


def run_parsers(report: Report, *, examples: int, grammar: str | None) -> None:  # pure parsers: no gateway
    """tests/functionary/test_parser_properties.py with FUNCTIONARY_HYPOTHESIS_EXAMPLES=examples."""
    env = {**os.environ, "FUNCTIONARY_HYPOTHESIS_EXAMPLES": str(examples)}
    command = [sys.executable, "-m", "pytest", "tests/functionary/test_parser_properties.py", "-q",
               "-p", "no:cacheprovider", "--hypothesis-show-statistics", "--hypothesis-seed=0"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    counts = re.findall(r"- (\d+) passing, (\d+) failing, and (\d+) invalid test cases", output)
    tried = sum(int(p) + int(f) for p, f, _ in counts)
    invalid = sum(int(i) for _, _, i in counts)
    passed = re.search(r"(\d+) passed", output)
    failed = re.search(r"(\d+) failed", output)
    report.cases += tried
    report.figures.update({
        "examples per test (max)": examples, "tests passed": int(passed.group(1)) if passed else 0,
        "tests failed": int(failed.group(1)) if failed else 0, "invalid (filtered) examples": invalid, "seconds": round(time.monotonic() - started, 1),
    })
    if done.returncode != 0:
        report.fail("pytest failed:\n" + "\n".join(output.splitlines()[-80:]))


SUITES = {"badinput": run_badinput, "faults": run_faults, "soak": run_soak, "security": run_security,
          "parsers": run_parsers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--long", action="store_true", help="the long run (figures for bench/RESULTS.md)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--grammar", choices=("auto", "on", "off"), default=None,
                        help="the gateway's --grammar (default: the gateway's own default)")
    args = parser.parse_args(argv)
    sizes = SIZES[args.suite][1 if args.long else 0]
    report = Report(args.suite + (" (long)" if args.long else "") + (f" --grammar {args.grammar}" if args.grammar else ""))
    started = time.monotonic()
    SUITES[args.suite](report, **sizes, grammar=args.grammar)
    report.figures.setdefault("seconds", round(time.monotonic() - started, 1))
    print(report.summary())
    if args.json:
        args.json.write_text(report.as_json(), encoding="utf-8")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
