"""Command line, launcher-like start-up logs and the server loop."""

from __future__ import annotations

import argparse
import asyncio
import json
import ipaddress
import os
import signal
import sys
import time

from .app import Emulator
from .common import FAULT_SWITCHES, ROUTER, VERSION, Log, coerce_switch
from .connection import Connection
from .replies import parse_reply
from .tokenizer import Tokenizer
from .validation import Limits, version_tuple

def _env(name: str, default=None):
    return os.environ.get(name, default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tgi.emulator", allow_abbrev=False,
        description="Emulates text-generation-launcher / TGI's router. Unknown launcher flags are ignored.")
    add = parser.add_argument
    add("--model-id", default=_env("MODEL_ID", "bigscience/bloom-560m"))
    add("--revision", default=_env("REVISION"))
    add("--hostname", default=_env("HOSTNAME", "0.0.0.0"))
    add("-p", "--port", type=int, default=int(_env("PORT", "3000")))
    add("--max-total-tokens", type=int, default=_int_env("MAX_TOTAL_TOKENS"))
    add("--max-input-tokens", type=int, default=_int_env("MAX_INPUT_TOKENS"))
    add("--max-input-length", type=int, default=_int_env("MAX_INPUT_LENGTH"))
    add("--max-batch-prefill-tokens", type=int, default=_int_env("MAX_BATCH_PREFILL_TOKENS"))
    add("--max-concurrent-requests", type=int, default=_int_env("MAX_CONCURRENT_REQUESTS", 128))
    add("--max-best-of", type=int, default=_int_env("MAX_BEST_OF", 2))
    add("--max-stop-sequences", type=int, default=_int_env("MAX_STOP_SEQUENCES", 4))
    add("--max-top-n-tokens", type=int, default=_int_env("MAX_TOP_N_TOKENS", 5))
    add("--max-client-batch-size", type=int, default=_int_env("MAX_CLIENT_BATCH_SIZE", 4))
    add("--payload-limit", type=int, default=_int_env("PAYLOAD_LIMIT", 2000000))
    add("--disable-grammar-support", action="store_true",
        default=_env("DISABLE_GRAMMAR_SUPPORT", "").lower() in ("1", "true"))
    add("--enable-prefill-logprobs", action="store_true")
    add("--num-shard", type=int, default=_int_env("NUM_SHARD"))
    add("--sharded", default=_env("SHARDED"))
    add("--quantize", default=_env("QUANTIZE"))
    add("--dtype", default=_env("DTYPE"))
    add("--trust-remote-code", action="store_true")
    add("--api-key", default=_env("API_KEY"))
    add("--json-output", action="store_true")
    # emulator switches
    add("--tgi-version", default=VERSION, help="TGI version to behave like (info fields, SSE framing, defaults)")
    add("--pipeline-tag", default=None, help="/info model_pipeline_tag; decides return_full_text on POST /")
    add("--bos-token", default="<|begin_of_text|>", help='BOS the tokenizer adds ("" for none)')
    add("--eos-token", action="append", help="special token text that is an EOS (repeatable)")
    add("--script", help="JSON file of scripted replies")
    add("--model-dir", help="model mode: a directory with tokenizer.json and emulator_model.json (see model.py)")
    add("--startup-delay", type=float, default=0.0, help="keep the port closed this many seconds")
    add("--crash-on-start", type=int, default=None, metavar="CODE", help="log loading lines, then exit CODE")
    for name, (kind, default) in FAULT_SWITCHES.items():
        flag = "--" + name.replace("_", "-")
        if name == "max_concurrent_requests":
            continue
        if kind == "bool":
            add(flag, action="store_true", default=None)
        else:
            add(flag, type=float if kind == "float" else int, default=None)
    return parser


def _int_env(name: str, default=None):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def parse_args(argv):
    args, _unknown = build_parser().parse_known_args(argv)
    return args


def startup_problem(args) -> str | None:
    """Fills in launcher defaults; returns the launcher's complaint when the settings cannot work."""
    if args.max_input_tokens is not None and args.max_input_length is not None:
        return "`max_input_tokens` and `max_input_length` are the same parameter, use `max_input_tokens`"
    if args.max_input_tokens is None:
        args.max_input_tokens = args.max_input_length
    if args.max_total_tokens is None:
        args.max_total_tokens = 4096 if args.max_input_tokens is None else max(4096, args.max_input_tokens + 1)
    if args.max_input_tokens is None:
        args.max_input_tokens = args.max_total_tokens - 1
    if args.max_input_tokens >= args.max_total_tokens:
        return "`max_input_tokens` must be < `max_total_tokens`"
    if args.max_batch_prefill_tokens is None:
        args.max_batch_prefill_tokens = max(4096, args.max_input_tokens)
    return None


def initial_faults(args) -> dict:
    faults = {name: default for name, (_, default) in FAULT_SWITCHES.items()}
    for name in FAULT_SWITCHES:
        value = getattr(args, name, None)
        if value is not None:
            faults[name] = coerce_switch(name, value)
    if args.legacy_sse is None and version_tuple(args.tgi_version) < (2, 1, 0):
        faults["legacy_sse"] = True
    return faults


def load_script(path: str | None, eos_texts) -> list:
    if not path:
        return []
    with open(path, encoding="utf-8") as handle:
        body = json.load(handle)
    replies = body.get("replies") if isinstance(body, dict) else body
    if not isinstance(replies, list):
        raise ValueError('a script file holds {"replies": [...]} or a list of replies')
    return [parse_reply(item, eos_texts) for item in replies]


def _debug_args(args) -> str:
    def show(value):
        if value is None:
            return "None"
        if isinstance(value, bool):
            return "true" if value else "false"
        return f'Some("{value}")' if isinstance(value, str) else f"Some({value})"
    return (f'Args {{ model_id: "{args.model_id}", revision: {show(args.revision)}, validation_workers: 2, '
            f"sharded: {show(args.sharded)}, num_shard: {show(args.num_shard)}, quantize: {show(args.quantize)}, "
            f"dtype: {show(args.dtype)}, trust_remote_code: {show(args.trust_remote_code)}, "
            f"max_concurrent_requests: {args.max_concurrent_requests or 128}, max_best_of: {args.max_best_of}, "
            f"max_stop_sequences: {args.max_stop_sequences}, max_top_n_tokens: {args.max_top_n_tokens}, "
            f"max_input_tokens: {show(args.max_input_tokens)}, max_input_length: {show(args.max_input_length)}, "
            f"max_total_tokens: {show(args.max_total_tokens)}, "
            f"max_batch_prefill_tokens: {show(args.max_batch_prefill_tokens)}, "
            f'hostname: "{args.hostname}", port: {args.port}, json_output: {show(args.json_output)}, '
            f"disable_grammar_support: {show(args.disable_grammar_support)}, "
            f"payload_limit: {args.payload_limit} }}")


def log_loading(log: Log, args, *, delay: float) -> None:
    """The launcher's download and shard lines; with ``delay`` the shard takes that long to become ready."""
    started = time.monotonic()
    log("Using attention flashinfer - Prefix caching true")
    log(f"Starting check and download process for {args.model_id}", span="download")
    log("Files are already present on the host. Skipping download.", span="download")
    log(f"Successfully downloaded weights for {args.model_id}")
    log("Starting shard", span="shard-manager", rank=0)
    next_wait = started + 10.0
    while time.monotonic() - started < delay:
        time.sleep(min(0.05, max(0.0, delay - (time.monotonic() - started))))
        if time.monotonic() >= next_wait:
            log("Waiting for shard to be ready...", span="shard-manager", rank=0)
            next_wait += 10.0


def log_crash(log: Log, args) -> None:
    log_loading(log, args, delay=0.0)
    log("Shard complete standard error output:\n\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
        "1.96 GiB. GPU 0 has a total capacity of 23.68 GiB of which 1.02 GiB is free.", level="ERROR",
        span="shard-manager", rank=0)
    log("Shard 0 failed to start", level="ERROR")
    log("Shutting down shards")
    sys.stderr.write("Error: ShardCannotStart\n")
    sys.stderr.flush()


def resolve_host(hostname: str, log: Log) -> str:
    try:
        ipaddress.ip_address(hostname)
        return hostname
    except ValueError:
        log("Invalid hostname, defaulting to 0.0.0.0", level="WARN", target=ROUTER)
        return "0.0.0.0"


async def serve(app: Emulator, host: str, port: int, log: Log, args) -> int:
    loop = asyncio.get_running_loop()
    log(f"Shard ready in {max(args.startup_delay, 0.01):.2f}s", span="shard-manager", rank=0)
    log("Starting Webserver")
    log("Warming up model", target=ROUTER)
    log(f"Setting max batch total tokens to {args.max_total_tokens * 4}", target=ROUTER)
    log("Using backend V3", target=ROUTER)
    log("Connected", target=ROUTER)
    try:
        server = await loop.create_server(lambda: Connection(app), host, port, reuse_address=True, backlog=2048)
    except OSError as exc:
        log(f"Could not bind {host}:{port}: {exc}", level="ERROR", target=ROUTER)
        return 1
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()
    log("signal received, starting graceful shutdown", target=ROUTER)
    server.close()
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = Log(args.json_output)
    log(_debug_args(args))
    if args.crash_on_start is not None:
        log_crash(log, args)
        return args.crash_on_start
    problem = startup_problem(args)
    if problem:
        log(problem, level="ERROR")
        return 1
    limits = Limits(args)
    try:
        script = load_script(args.script, limits.eos_texts)
    except (OSError, ValueError) as exc:
        log(f"cannot load --script {args.script}: {exc}", level="ERROR")
        return 2
    faults = initial_faults(args)
    model = None
    if args.model_dir:
        try:
            from .model import Model  # model mode: tokenizers and outlines-core, imported only here

            model = Model(args.model_dir)
        except (OSError, ValueError, ImportError) as exc:
            log(f"cannot load --model-dir {args.model_dir}: {exc}", level="ERROR")
            return 2
    tokenizer = Tokenizer(args.bos_token) if model is None else model.tokenizer
    app = Emulator(limits, tokenizer, faults, script, log, model=model)
    host = resolve_host(args.hostname, log)
    try:
        log_loading(log, args, delay=args.startup_delay)
        return asyncio.run(serve(app, host, args.port, log, args))
    except KeyboardInterrupt:
        return 0
