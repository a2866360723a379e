"""The system under test for the reliability suites: the real gateway process over the real TGI emulator
process, both on 127.0.0.1, with a tiny real tokenizer directory for the template.

    with running_stack(token_delay=0.01, gateway_args=["--request-timeout", "2"]) as stack:
        stack.tgi.script([...]); httpx.post(stack.url + "/v1/chat/completions", ...)

Also the small checks every suite shares: an OpenAI error body, and the gateway's resident memory.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from functionary.templates import get_template
from tests.support.model_fixture import make_model_dir
from tests.support.gateway_proc import GatewayHandle, start_gateway
from tests.support.emulator_proc import EmulatorHandle, start_emulator

CHAT = "/v1/chat/completions"
VERSION = "v3.llama3"
MODEL_NAME = "functionary"
USER = [{"role": "user", "content": "hi"}]
EOT = {"text": "<|eot_id|>", "special": True}
# the tiny test tokenizer makes many tokens of a long tools prompt: give it room, as tests/tgi/api does
EMULATOR_LIMITS = {"max_total_tokens": 65536, "max_input_tokens": 60000}


@dataclass
class Stack:
    tgi: EmulatorHandle
    gateway: GatewayHandle
    model_dir: Path

    @property
    def url(self) -> str:
        return self.gateway.base_url


def model_dir_for(version: str, root: Path) -> Path:
    template = get_template(version)
    specials = tuple(dict.fromkeys((*template.special_tokens, *template.stop_tokens, *template.eos_tokens)))
    return make_model_dir(root / version.replace(".", "_"), special_tokens=specials)


def gateway_command(model_dir: Path, endpoint: str, *extra: str, version: str = VERSION,
                    grammar: str | None = None) -> list[str]:
    """The gateway's arguments. ``grammar`` (auto / on / off) sets ``--grammar``; without it the gateway runs
    with its default, auto."""
    chosen = ["--grammar", grammar] if grammar is not None else []
    return ["--model", str(model_dir), "--endpoint", endpoint, "--prompt-template", version, "--no-launch",
            "--served-model-name", MODEL_NAME, *chosen, *extra]


def unexpected_errors(logs: str) -> list[str]:
    """The gateway's unexpected errors (500s), each with the last lines of its traceback."""
    lines = logs.splitlines()
    found = []
    for i, line in enumerate(lines):
        if "unexpected error" in line:
            block = []
            for follow in lines[i + 1:i + 200]:
                if follow[:4].isdigit() and block:  # the next log record
                    break
                block.append(follow)
            ours = [b.strip() for b in block if "/site-packages/" not in b and b.strip().startswith("File")]
            found.append(" | ".join([line[24:], *ours[-4:], *(block[-1:] if block else [])]))
    return found


@contextlib.contextmanager
def running_stack(*, version: str = VERSION, gateway_args: list[str] | tuple[str, ...] = (),
                  gateway_env: dict | None = None, grammar: str | None = None, **switches: object) -> Iterator[Stack]:
    """The emulator (``switches`` become its CLI flags) and a gateway for ``version`` in front of it."""
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        model_dir = model_dir_for(version, Path(tmp))
        with start_emulator(**{**EMULATOR_LIMITS, **switches}) as tgi:
            args = gateway_command(model_dir, tgi.base_url, *gateway_args, version=version, grammar=grammar)
            with start_gateway(args, env=gateway_env, wait=False) as gateway:
                gateway.wait_healthy()  # /health answers 200: unlike start_gateway's readiness, TGI is up too
                yield Stack(tgi, gateway, model_dir)


def emulator_on(port: int, **switches: object) -> contextlib.AbstractContextManager[EmulatorHandle]:
    """An emulator on a given port (to bring TGI back where the gateway expects it)."""
    return start_emulator(port=port, **{**EMULATOR_LIMITS, **switches})


def openai_error_problem(status: int, body: bytes, content_type: str) -> str | None:
    """Why a 4xx/5xx answer is not an OpenAI error body (``None`` when it is one)."""
    import json

    if not content_type.startswith("application/json"):
        return f"content-type {content_type!r}"
    try:
        data = json.loads(body)
    except ValueError:
        return "body is not JSON"
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict) or set(data) != {"error"}:
        return "body is not {'error': {...}}"
    if set(error) != {"message", "type", "param", "code"}:
        return f"error keys {sorted(error)}"
    if not isinstance(error["message"], str) or not error["message"] or not isinstance(error["type"], str):
        return "message/type not non-empty strings"
    for key in ("param", "code"):
        if error[key] is not None and not isinstance(error[key], str):
            return f"{key} is neither a string nor null"
    return None


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc), without a psutil dependency."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
