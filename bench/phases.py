"""The phases of ``bench/run.py`` that start their own processes, run after the shared stack is gone.

Each is also a command of its own (``python -m bench.<module> --help``); here they share ``--quick``.
"""

from __future__ import annotations

import time
import traceback


def _inproc(quick: bool) -> dict:
    from bench import inproc

    return inproc.measure(quick=quick)


def _workers(quick: bool) -> dict:
    from bench import workers

    return workers.measure(seconds=2.0 if quick else 6.0, rounds=1 if quick else 3)


def _replicas(quick: bool) -> dict:
    from bench import replicas

    return replicas.measure(quick=quick)


def _guarantees(quick: bool) -> dict:
    from bench import guarantees

    return guarantees.measure(quick=quick)


def _bigbody(quick: bool) -> dict:
    from bench import big_body

    return big_body.measure(requests=15 if quick else 40)


def _clients(quick: bool) -> dict:
    from bench import clients

    return clients.compare(quick=quick)


def _profile(quick: bool) -> dict:
    from bench import profile_summary

    return profile_summary.measure(quick=quick)


# phase: (what it prints, its key in results.json, the function)
SEPARATE = {
    "inproc": ("in-process pipeline costs", "inproc", _inproc),
    "workers": ("throughput by --workers count", "workers", _workers),
    "replicas": ("replicas: one TGI stand-in against two pooled", "replicas", _replicas),
    "guarantees": ("guarantee modes on the emulator's model mode (--grammar auto)", "guarantees", _guarantees),
    "bigbody": ("a maximum-size body beside a one-word chat", "big_body", _bigbody),
    "clients": ("TGI client comparison", "clients", _clients),
    "profile": ("profile summary (py-spy)", "profile", _profile),
}


def run_separate(results: dict, wanted: set[str], *, quick: bool, clients: bool = True) -> None:
    """Run the wanted separate phases in order, each result under its key, each one's duration under ``timings``.
    A phase that fails is reported (``warnings``, the traceback printed) and the others still run."""
    for phase, (title, key, measure) in SEPARATE.items():
        if phase not in wanted or (phase == "clients" and not clients):
            continue
        print(title, flush=True)
        started = time.time()
        try:
            results[key] = measure(quick)
        except Exception as exc:  # noqa: BLE001 - one broken phase must not lose the run's other figures
            traceback.print_exc()
            results.setdefault("warnings", []).append(f"phase {phase} failed: {type(exc).__name__}: {exc}")
        results.setdefault("timings", {})[phase] = round(time.time() - started, 1)
        print(f"  {phase}: {results['timings'][phase]:.0f} s", flush=True)
