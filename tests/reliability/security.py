"""Security checks: API keys, the body limit, Docker arguments that cannot be injected into, and secrets that
never reach a log line or TGI.

Each check records a case in the report; the long run adds a timing probe of the key comparison (median
latency of near-miss keys against far-miss keys, reported, not asserted: loopback noise dwarfs the effect).
"""

from __future__ import annotations

import ast
import inspect
import socket
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from tests.reliability.report import Report
from tests.reliability.stack import CHAT, USER, openai_error_problem, running_stack

KEY = "sk-reliability-0123456789abcdef"
ENV_KEY = "sk-from-env-fedcba9876543210"
WRONG = "sk-wrong-attempt-5555555555"
HF_TOKEN = "hf_reliabilitySecretToken42"
BODY_LIMIT = 65536


def _is_openai_401(response: httpx.Response) -> bool:
    return response.status_code == 401 and openai_error_problem(
        401, response.content, response.headers.get("content-type", "")) is None and (
        response.json()["error"]["code"] == "invalid_api_key")


def check_auth(url: str, report: Report) -> None:
    body = {"messages": USER}
    refused = {
        "no header": {},
        "wrong key": {"authorization": f"Bearer {WRONG}"},
        "key with a suffix": {"authorization": f"Bearer {KEY}x"},
        "key prefix": {"authorization": f"Bearer {KEY[:-1]}"},
        "empty bearer": {"authorization": "Bearer"},
        "basic scheme": {"authorization": f"Basic {KEY}"},
        "key without scheme": {"authorization": KEY},
        "non-ASCII key": {"authorization": "Bearer ключ".encode()},
    }
    with httpx.Client(base_url=url, timeout=30) as client:
        for name, headers in refused.items():
            for method, path, json_body in (("POST", CHAT, body), ("POST", CHAT, {**body, "stream": True}),
                                            ("GET", "/v1/models", None)):
                response = client.request(method, path, json=json_body, headers=headers)
                report.check(_is_openai_401(response),
                             f"auth {name} {method} {path}: HTTP {response.status_code} {response.text[:200]}")
                report.check(KEY not in response.text and WRONG not in response.text,
                             f"auth {name}: the answer echoes a key")
        accepted = {"--api-key": f"Bearer {KEY}", "lower-case scheme": f"bearer {KEY}",
                    "FUNCTIONARY_API_KEYS": f"Bearer {ENV_KEY}"}
        for name, value in accepted.items():
            response = client.post(CHAT, json=body, headers={"authorization": value})
            report.check(response.status_code == 200, f"auth {name}: HTTP {response.status_code} {response.text[:200]}")
        # an unauthenticated body is never read: a body over the limit still gets 401, not 413
        response = client.post(CHAT, content=b"x" * (BODY_LIMIT * 2), headers={"content-type": "application/json"})
        report.check(response.status_code == 401, f"auth before the body: HTTP {response.status_code}")
        response = client.get("/health")
        report.check(response.status_code == 200 and KEY not in response.text, f"/health: HTTP {response.status_code}")


def check_key_comparison_is_constant_time(report: Report) -> None:
    """The comparison is hmac.compare_digest over every key (no early exit on the first match or byte)."""
    from tgi.api import auth

    source = textwrap.dedent(inspect.getsource(auth.check_auth))
    secret_names = {"key", "keys", "token", "header"}
    plain = []  # ==, !=, in, not in with a key or the presented token on either side
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            names = {n.id for side in (node.left, *node.comparators) for n in ast.walk(side) if isinstance(n, ast.Name)}
            if names & secret_names:
                plain.append(ast.unparse(node))
    ok = "hmac.compare_digest" in source and not plain
    report.check(ok, f"tgi.api.auth.check_auth compares keys without hmac.compare_digest: {plain}")


def probe_key_timing(url: str, report: Report, *, rounds: int) -> None:
    """Median latency of 401s for a near miss (all but the last character right) and a far miss."""
    near = "Bearer " + KEY[:-1] + ("0" if KEY[-1] != "0" else "1")
    far = "Bearer " + "z" * len(KEY)
    timings: dict[str, list[float]] = {"near miss": [], "far miss": []}
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(rounds):
            for name, value in (("near miss", near), ("far miss", far)):
                started = time.perf_counter()
                client.get("/v1/models", headers={"authorization": value})
                timings[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) * 1e6 for name, values in timings.items()}
    report.figures["401 median latency, µs (near miss, far miss)"] = (round(medians["near miss"], 1),
                                                                     round(medians["far miss"], 1))
    report.figures["timing probe rounds"] = rounds


def check_body_limit(url: str, report: Report) -> None:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=30) as client:
        over = b'{"messages": [{"role": "user", "content": "' + b"x" * BODY_LIMIT + b'"}]}'
        response = client.post(CHAT, content=over, headers=headers)
        report.check(response.status_code == 413 and openai_error_problem(413, response.content, "application/json") is None,
                     f"body over the limit (content-length): HTTP {response.status_code}")

        def chunks():
            yield over[:1000]
            for start in range(1000, len(over), 8192):
                yield over[start:start + 8192]

        response = client.post(CHAT, content=chunks(), headers=headers)
        report.check(response.status_code == 413, f"body over the limit (chunked): HTTP {response.status_code}")
        under = b'{"messages": [{"role": "user", "content": "' + b"y" * (BODY_LIMIT - 100) + b'"}]}'
        response = client.post(CHAT, content=under, headers=headers)
        report.check(response.status_code != 413, f"body under the limit: HTTP {response.status_code}")
    # a huge declared length is refused from the headers alone: no body is sent, the answer comes at once
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n".encode())
        head = sock.recv(65536).split(b"\r\n", 1)[0]
    report.check(head.startswith(b"HTTP/1.1 413") and time.monotonic() - started < 5,
                 f"declared 10 GB body: {head!r} after {time.monotonic() - started:.2f}s")


def check_docker_args(report: Report) -> None:
    """Hostile model ids and launcher arguments stay single argv elements; nothing goes through a shell."""
    from tgi.launch.spec import LaunchSpec

    hostile = ["meetkai/functionary; rm -rf /", "meetkai/functionary small v3", "$(touch /tmp/pwned)",
               "`id`", "a && b | c > d", "--entrypoint=/bin/sh", "../../etc/passwd", "x\ny"]
    with tempfile.TemporaryDirectory(prefix="reliability-docker-") as tmp:
        for model in hostile:
            model_dir = Path(tmp) / "weights; rm -rf"
            model_dir.mkdir(exist_ok=True)
            spec = LaunchSpec(model=model, model_dir=model_dir, extra_args=("--max-batch-prefill-tokens", "1; reboot"),
                              quantize="awq; id", gpus="none")
            kwargs = spec.create_kwargs()
            args = kwargs["command"]
            ok = (isinstance(args, list) and all(isinstance(a, str) for a in args)
                  and args[args.index("--model-id") + 1] == spec.container_model_path
                  and args[-2:] == ["--max-batch-prefill-tokens", "1; reboot"]
                  and args[args.index("--quantize") + 1] == "awq; id"
                  and all(c.isalnum() or c in "_.-" for c in kwargs["name"])
                  and not any(ch in spec.container_model_path for ch in ";$`&|<>\n ")
                  and ".." not in spec.container_model_path.split("/"))
            report.check(ok, f"docker args for model {model!r}: {args} name {kwargs['name']!r}")
    offenders = []
    root = Path(__file__).resolve().parents[2]
    for path in root.joinpath("tgi").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "shell=True" in text or "os.system(" in text or "os.popen(" in text:
            offenders.append(str(path.relative_to(root)))
    report.check(not offenders, f"shell use in tgi/: {offenders}")


def check_secrets_not_logged(report: Report, stack) -> None:
    """Run the secret-bearing traffic, then search the gateway's log and what TGI received."""
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        client.post(CHAT, json={"messages": USER}, headers={"authorization": f"Bearer {KEY}"})
        client.post(CHAT, json={"messages": USER, "stream": True}, headers={"authorization": f"Bearer {KEY}"})
        client.post(CHAT, json={"messages": USER}, headers={"authorization": f"Bearer {WRONG}"})
        client.post(CHAT, json={"messages": USER, "temperature": "hot"}, headers={"authorization": f"Bearer {KEY}"})
    logs = stack.gateway.logs()
    for name, secret in (("--api-key", KEY), ("FUNCTIONARY_API_KEYS", ENV_KEY), ("a wrong key", WRONG),
                         ("HF_TOKEN", HF_TOKEN)):
        report.check(secret not in logs, f"{name} appears in the gateway's log")
    forwarded = [r["headers"] for r in stack.tgi.requests()]
    report.check(bool(forwarded) and not any(KEY in str(h) or WRONG in str(h) for h in forwarded),
                 f"client keys forwarded to TGI: {forwarded[:1]}")
    report.figures["gateway log lines searched"] = len(logs.splitlines())


def run_security(report: Report, *, timing_rounds: int = 0, grammar: str | None = None) -> None:
    check_key_comparison_is_constant_time(report)
    check_docker_args(report)
    env = {"FUNCTIONARY_API_KEYS": ENV_KEY, "HF_TOKEN": HF_TOKEN}
    args = ["--api-key", KEY, "--max-body-bytes", str(BODY_LIMIT), "--log-level", "debug"]
    with running_stack(gateway_args=args, gateway_env=env, grammar=grammar) as stack:
        check_auth(stack.url, report)
        check_body_limit(stack.url, report)
        if timing_rounds:
            probe_key_timing(stack.url, report, rounds=timing_rounds)
        check_secrets_not_logged(report, stack)
