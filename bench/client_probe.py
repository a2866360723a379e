"""One TGI client against the emulator: the protocol traps, then the overhead per streamed request.

    python bench/client_probe.py --client thin|hub|textgen --url http://127.0.0.1:PORT [--requests N]

Runs standalone (standard library + the client under test), so that the ``text-generation`` package can be
measured from a throwaway virtualenv: it pins ``huggingface-hub<1.0`` and is never a dependency of ours.
Prints one JSON object. ``bench/clients.py`` runs it for each client and tabulates the answers.

Clients: ``thin`` is ours (``tgi.protocol.client.TGIClient``: tgi.protocol.http1, ``/generate_stream``, our SSE decoder);
``hub`` is ``huggingface_hub.AsyncInferenceClient`` (``text_generation(stream=True, details=True)``, posts to
``/``); ``textgen`` is ``text_generation.AsyncClient`` 0.7.0 (posts to ``/``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request

PROMPT = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
REPLY = "Hello there, here is a short answer with a few tokens: caf\u00e9 \U0001F600 done.<|eot_id|>"
EXPECTED = REPLY[: -len("<|eot_id|>")]


def control(url: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read() or b"null")


def reset(url: str, **faults) -> None:
    control(url, "POST", "/emulator/reset")
    if faults:
        control(url, "POST", "/emulator/faults", faults)


class Client:
    """``stream(prompt, **params) -> (tokens: list[(text, special)], final_generated_text)``."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind, self.url = kind, url
        if kind == "thin":
            from tgi.protocol.client import TGIClient

            self.client = TGIClient(url)
        elif kind == "hub":
            from huggingface_hub import AsyncInferenceClient

            self.client = AsyncInferenceClient(base_url=url)
        else:
            from text_generation import AsyncClient

            self.client = AsyncClient(url, timeout=30)

    async def stream(self, prompt: str, **params):
        tokens, final = [], None
        if self.kind == "thin":
            body = {"inputs": prompt, "parameters": {"details": True, **params}}
            async for ev in self.client.generate_stream(body):
                tokens.append((ev.token.text, ev.token.special))
                if ev.generated_text is not None:
                    final = ev.generated_text
        elif self.kind == "hub":
            async for ev in await self.client.text_generation(prompt, stream=True, details=True, **params):
                tokens.append((ev.token.text, ev.token.special))
                if ev.generated_text is not None:
                    final = ev.generated_text
        else:
            async for ev in self.client.generate_stream(prompt, **params):
                tokens.append((ev.token.text, ev.token.special))
                if ev.generated_text is not None:
                    final = ev.generated_text
        return tokens, final

    async def close(self) -> None:
        if self.kind == "thin":
            await self.client.aclose()
        elif self.kind == "hub":
            await self.client.close()


def _text(tokens) -> str:
    return "".join(text for text, special in tokens if not special)


async def trap(client: Client, name: str, faults: dict, params: dict, check) -> dict:
    reset(client.url, **faults)
    control(client.url, "POST", "/emulator/script", {"replies": [{"text": REPLY}]})
    try:
        tokens, final = await asyncio.wait_for(client.stream(PROMPT, **params), 20)
        ok, note = check(tokens, final, None)
    except Exception as exc:  # what the client raised is the finding
        ok, note = check(None, None, exc)
    finally:
        reset(client.url)
    return {"trap": name, "ok": ok, "note": note}


def _err(exc) -> str:
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def expect_tokens(tokens, final, exc):
    if exc is not None:
        return False, "raised " + _err(exc)
    if _text(tokens) != EXPECTED:
        return False, f"token text {_text(tokens)[:60]!r}"
    if final != EXPECTED:
        return False, f"final generated_text {final[:60]!r}" if final else "no final event"
    return True, "tokens and generated_text right"


def expect_error(*words):
    def check(tokens, final, exc):
        if exc is None:
            return False, f"no error: the stream ended normally after {len(tokens)} tokens"
        text = (type(exc).__name__ + " " + str(exc)).lower()
        if any(w in text for w in words):
            return True, "raised " + _err(exc)
        return False, "raised an unrelated " + _err(exc)
    return check


async def run_traps(client: Client) -> list[dict]:
    # the clients that post to ``/`` get return_full_text=False, except in the case that tests the default
    p = {"max_new_tokens": 64} if client.kind == "thin" else {"max_new_tokens": 64, "return_full_text": False}
    cases = [
        ("plain stream (details, special EOS, UTF-8)", {}, p, expect_tokens),
        ("return_full_text left to the server default", {}, {"max_new_tokens": 64}, expect_tokens),
        ("TGI <= 2.0 framing `data:{json}`", {"legacy_sse": True}, p, expect_tokens),
        ("`:` keep-alive comments mid-stream", {"keep_alive": 0.02, "token_delay": 0.05}, p, expect_tokens),
        ("split UTF-8 (empty-text tokens)", {"split_utf8": True}, p, expect_tokens),
        ("error event in a 200 stream (overloaded)", {"overload": True}, p, expect_error("overload")),
        ("generation error after 3 tokens", {"fail_after": 3}, p, expect_error("generation", "cuda", "memory")),
        ("stream cut without a final event", {"cut_after": 3}, p, expect_error("incomplete", "final", "ended")),
        ("incomplete_generation event", {"incomplete_after": 3}, p, expect_error("incomplete")),
        ("validation error event (top_n_tokens too large)", {}, {**p, "top_n_tokens": 50},
         expect_error("top_n_tokens", "valid")),
        ("text/plain 422 body rejection (top_n_tokens -1)", {}, {**p, "top_n_tokens": -1},
         expect_error("top_n_tokens", "deserialize", "422", "invalid")),
    ]
    return [await trap(client, name, faults, params, check) for name, faults, params, check in cases]


async def overhead(client: Client, n: int) -> dict:
    reset(client.url)
    reply = {"text": "all\nThe morning flight is a good choice. Let me check the forecast for New York for the days "
                     "you will be there.>>>get_weather\n{\"location\": \"New York, NY\", \"unit\": \"fahrenheit\", "
                     "\"days\": 5, \"include_hourly\": false}<|eot_id|>"}
    for start in range(0, n + 20, 1000):
        control(client.url, "POST", "/emulator/script", {"replies": [reply] * min(1000, n + 20 - start)})
    params = {"max_new_tokens": 128, "return_full_text": False} if client.kind != "thin" else {"max_new_tokens": 128}
    for _ in range(20):
        await client.stream(PROMPT, **params)
    lat = []
    cpu0 = sum(os.times()[:2])
    for _ in range(n):
        t0 = time.perf_counter()
        tokens, _ = await client.stream(PROMPT, **params)
        lat.append(time.perf_counter() - t0)
    cpu = sum(os.times()[:2]) - cpu0
    lat.sort()
    reset(client.url)
    return {"requests": n, "tokens": len(tokens), "p50_ms": lat[n // 2] * 1e3, "p99_ms": lat[int(n * 0.99)] * 1e3,
            "cpu_ms_per_request": cpu / n * 1e3}


async def main_async(args) -> dict:
    client = Client(args.client, args.url)
    try:
        result = {"client": args.client, "traps": await run_traps(client)}
        result["overhead"] = await overhead(client, args.requests)
    finally:
        await client.close()
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--client", choices=("thin", "hub", "textgen"), required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--root", help="repository root to import tgi from (thin client)")
    args = p.parse_args()
    if args.root:
        sys.path.insert(0, args.root)
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
