"""TGI client choice: our thin httpx client vs ``huggingface_hub.AsyncInferenceClient`` vs the deprecated
``text-generation`` package, on the protocol traps and the overhead per streamed request.

    python bench/clients.py [--quick]

Each client runs in its own process (``bench/client_probe.py``) against one emulator; ``text-generation``
runs from a throwaway virtualenv under /tmp (it pins ``huggingface-hub<1.0``), made on first use with pip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "bench" / "client_probe.py"
TG_VENV = Path(tempfile.gettempdir()) / "bench-tg-venv"


def text_generation_python() -> tuple[str | None, str]:
    """A python with ``text-generation`` 0.7.0, made under /tmp when missing; (None, why) when it cannot be."""
    python = TG_VENV / "bin" / "python"
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(TG_VENV)], capture_output=True, text=True)
        if made.returncode != 0:
            return None, made.stderr[-300:]
    check = subprocess.run([str(python), "-c", "import text_generation"], capture_output=True)
    if check.returncode != 0:
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "text-generation==0.7.0"],
                             capture_output=True, text=True, timeout=600)
        if pip.returncode != 0:
            return None, "pip install text-generation failed: " + pip.stderr[-300:]
    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('text-generation'),"
                              " m.version('huggingface-hub'))"], capture_output=True, text=True).stdout.split()
    return str(python), f"text-generation {version[0]} (with huggingface-hub {version[1]}) in {TG_VENV}"


def compare(*, quick: bool = False) -> dict:
    sys.path[:0] = [str(ROOT)]
    from tests.support.emulator_proc import start_emulator

    requests = 100 if quick else 500
    tg_python, tg_note = text_generation_python()
    import huggingface_hub

    runs = [("thin", sys.executable, "tgi.protocol.client.TGIClient (tgi.protocol.http1, httptools " + _version("httptools") + ")"),
            ("hub", sys.executable, f"huggingface_hub {huggingface_hub.__version__} AsyncInferenceClient"),
            ("textgen", tg_python, tg_note)]
    out: dict = {"clients": {}}
    with start_emulator(max_total_tokens=4096) as emulator:
        for kind, python, label in runs:
            if python is None:
                out["clients"][kind] = {"label": label, "error": "not measured"}
                continue
            cmd = [python, str(PROBE), "--client", kind, "--url", emulator.base_url, "--requests", str(requests),
                   "--root", str(ROOT)]
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tempfile.gettempdir())
            try:
                result = json.loads(done.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                result = {"error": (done.stderr or done.stdout)[-600:]}
            result["label"] = label
            out["clients"][kind] = result
            print(f"  {kind}: {label}: " + (f"{sum(t['ok'] for t in result['traps'])}/{len(result['traps'])} traps, "
                                            f"{result['overhead']['p50_ms']:.2f} ms p50, "
                                            f"{result['overhead']['cpu_ms_per_request']:.2f} ms CPU a request"
                                            if "traps" in result else result["error"][-200:]), file=sys.stderr, flush=True)
    return out


def _version(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


if __name__ == "__main__":
    print(json.dumps(compare(quick="--quick" in sys.argv), indent=1))
