"""OpenAI-compatible gateway for Functionary models served by text-generation-inference: the command line.

    python server_tgi.py --model meetkai/functionary-small-v3.2 --endpoint http://127.0.0.1:8080

Arguments -> ``Settings`` -> ``create_app(settings)`` under uvicorn. Prompt formats and parsers live in
``functionary/``; the HTTP API in ``tgi/api/``; every exchange with TGI, Docker and the Hub in ``tgi/``
(docs/architecture.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from functionary.errors import GatewayError
from functionary.templates import TEMPLATES
from tgi.api.app import create_app
from tgi.api.settings import DEFAULT_SAVE_FOLDER, Settings
from tgi.api.startup import EXIT_LISTEN, EXIT_USAGE, UvicornStartupLine, report_startup_failure
from tgi.cluster.discovery import parse_dns_url

__all__ = ["Settings", "build_parser", "create_app", "main", "settings_from_args"]

log = logging.getLogger("gateway")


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Registers ``--a_b`` and ``--a-b`` as one option (the seed's underscore flags keep working)."""
    dashed = "--" + name.replace("_", "-")
    under = "--" + name.replace("-", "_")
    names = [dashed] if dashed == under else [under, dashed]
    parser.add_argument(*names, dest=name.replace("-", "_"), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="server_tgi.py",
        description="OpenAI-compatible API for Functionary models on text-generation-inference.",
    )
    _flag(p, "model", required=True, help="hub id or local directory with tokenizer files")
    _flag(p, "endpoint", action="append", default=None,
          help="TGI base URL; repeat for a cluster (default: --endpoints-file, else FUNCTIONARY_TGI_ENDPOINTS "
               "(comma separated), else http://127.0.0.1:8080)")
    _flag(p, "endpoints_file", default=None, help="file with one TGI base URL a line (# comments)")
    _flag(p, "max_in_flight_per_endpoint", type=int, default=None,
          help="at most this many generations at once on one endpoint; more wait (default: no limit)")
    _flag(p, "queue_timeout", type=float, default=30.0,
          help="seconds a request waits for a free endpoint slot before a 429")
    _flag(p, "health_interval", type=float, default=5.0, help="seconds between endpoint health checks (0 = off)")
    _flag(p, "eject_after", type=int, default=2, help="consecutive failures that take an endpoint out")
    _flag(p, "endpoint_dns", action="append", default=None,
          help="http://NAME:PORT whose DNS name resolves to many TGI addresses (a Kubernetes headless Service); "
               "re-resolved every --dns-interval seconds, addresses joining and leaving the pool (repeatable)")
    _flag(p, "dns_interval", type=float, default=10.0, help="seconds between --endpoint-dns lookups (0 = once)")
    _flag(p, "workers", type=int, default=1,
          help="gateway processes serving the one port (SO_REUSEPORT); about one per CPU core (docs/deploy.md)")
    _flag(p, "replicas", type=int, default=None,
          help="launch this many TGI containers, one per GPU group, on the ports from the first --endpoint's on")
    _flag(p, "gpus_per_replica", type=int, default=None,
          help="GPUs of each launched replica (groups of consecutive --gpus devices)")
    _flag(p, "host", default="127.0.0.1")
    _flag(p, "port", type=int, default=8000)
    _flag(p, "prompt_template", default=None,
          help="force a template version instead of detecting it: " + ", ".join(TEMPLATES))
    _flag(p, "served_model_name", default=None, help="model name clients use (default: --model)")
    _flag(p, "api_key", action="append", default=None,
          help="accepted API key; repeatable; also FUNCTIONARY_API_KEYS (comma separated)")
    _flag(p, "max_total_tokens", type=int, default=None, help="context size (default: from TGI /info)")
    _flag(p, "max_input_tokens", type=int, default=None)
    _flag(p, "startup_timeout", type=float, default=600.0, help="seconds to wait for TGI to be ready")
    _flag(p, "remote_model_save_folder", default=DEFAULT_SAVE_FOLDER,
          help="where hub weights are downloaded when a container is launched")
    _flag(p, "no_launch", action="store_true", help="never start a TGI container")
    _flag(p, "emulator", action="store_true",
          help="start the bundled TGI emulator (canned answers, no GPU) on the first endpoint's port")
    _flag(p, "revision", default=None, help="hub revision of the model")
    _flag(p, "tgi_image", default=None, help="TGI image to launch")
    _flag(p, "gpus", default="all", help="all | none | N | comma-separated device ids")
    _flag(p, "shm_size", default="1g")
    _flag(p, "num_shard", type=int, default=None)
    _flag(p, "quantize", default=None)
    _flag(p, "dtype", default=None)
    _flag(p, "keep_container", action="store_true", help="leave a launched container running on exit")
    _flag(p, "replace", action="store_true", help="replace a container of ours that has other settings")
    _flag(p, "launcher_arg", action="append", default=None,
          help="extra text-generation-launcher argument, passed through (repeatable)")
    _flag(p, "max_body_bytes", type=int, default=8 * 1024 * 1024)
    _flag(p, "max_top_n_tokens", type=int, default=5,
          help="TGI's --max-top-n-tokens (its /info does not say it): the largest top_logprobs accepted")
    _flag(p, "request_timeout", type=float, default=600.0,
          help="seconds a chat request may take in all; then it ends with an OpenAI error (0 = no limit)")
    _flag(p, "grammar", choices=("auto", "on", "off"), default="auto",
          help="auto: a request that asks for a guarantee (tool_choice required/named, strict tools, "
               "response_format, parallel_tool_calls false) gets one TGI request under a regex of the whole "
               "answer; on: every request with tools; off: never (the promises are then best effort)")
    _flag(p, "cors_origin", action="append", default=None,
          help="browser origin allowed to call the API (repeatable; * for any); default: no CORS headers")
    _flag(p, "log_level", default="info")
    _flag(p, "log_format", choices=("text", "json"), default="text",
          help="log lines as key=value text or one JSON object a line")
    return p


def _endpoints(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, ...]:
    """``--endpoint`` and ``--endpoints-file`` together; else FUNCTIONARY_TGI_ENDPOINTS; else the default."""
    urls = list(args.endpoint or ())
    if args.endpoints_file:
        try:
            text = Path(args.endpoints_file).read_text(encoding="utf-8")
        except OSError as exc:
            parser.error(f"--endpoints-file: {exc}")
        urls += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    if not urls:
        urls = os.environ.get("FUNCTIONARY_TGI_ENDPOINTS", "").split(",")
    urls = [u.strip().rstrip("/") for u in urls if u.strip()] or ["http://127.0.0.1:8080"]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            parser.error(f"not a TGI base URL: {url!r} (expected http://HOST:PORT)")
    return tuple(dict.fromkeys(urls))


def settings_from_args(argv: list[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_in_flight_per_endpoint is not None and args.max_in_flight_per_endpoint < 1:
        parser.error("--max-in-flight-per-endpoint must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        parser.error("--workers needs SO_REUSEPORT (Linux, BSD, macOS); run one worker per port instead")
    endpoints, replicas = _replica_endpoints(parser, args, _endpoints(parser, args))
    dns = tuple(dict.fromkeys(args.endpoint_dns or ()))
    for name in dns:
        try:
            parse_dns_url(name)
        except ValueError as exc:
            parser.error(f"--endpoint-dns: {exc}")
    if dns and (args.emulator or replicas > 1):
        parser.error("--endpoint-dns finds TGI that runs elsewhere: it cannot be combined with --emulator or --replicas")
    if dns and not args.endpoint and not args.endpoints_file:
        endpoints = ()  # only the discovered ones, not the default 127.0.0.1:8080
    keys = list(args.api_key or [])
    env_keys = os.environ.get("FUNCTIONARY_API_KEYS", "")
    keys += [k.strip() for k in env_keys.split(",") if k.strip()]
    same = ("model", "host", "port", "prompt_template", "served_model_name", "max_total_tokens", "max_input_tokens",
            "startup_timeout", "remote_model_save_folder", "no_launch", "emulator", "revision", "tgi_image", "gpus",
            "shm_size", "num_shard", "quantize", "dtype", "keep_container", "replace", "max_body_bytes", "max_top_n_tokens",
            "grammar",
            "log_level", "max_in_flight_per_endpoint", "queue_timeout", "health_interval", "eject_after", "log_format",
            "workers", "gpus_per_replica", "dns_interval")
    return Settings(
        **{name: getattr(args, name) for name in same},
        endpoints=endpoints,
        replicas=replicas,
        endpoint_dns=dns,
        api_keys=tuple(keys),
        launcher_args=tuple(args.launcher_arg or ()),
        request_timeout=args.request_timeout or None,
        cors_origins=tuple(args.cors_origin or ()),
    )


def _replica_endpoints(parser: argparse.ArgumentParser, args: argparse.Namespace,
                       endpoints: tuple[str, ...]) -> tuple[tuple[str, ...], int]:
    """``--replicas`` / ``--gpus-per-replica``: the replicas' endpoints (consecutive ports from the first
    ``--endpoint``'s) and their count; one group is a plain launch on those GPUs."""
    if args.replicas is None and args.gpus_per_replica is None:
        return endpoints, 1
    from tgi.launch.replicas import replica_endpoints, replica_groups

    if len(endpoints) != 1 or args.no_launch or args.emulator:
        parser.error("--replicas and --gpus-per-replica launch TGI: give one --endpoint (the first replica's "
                     "address), and neither --no-launch nor --emulator")
    try:
        groups = replica_groups(args.gpus, replicas=args.replicas, gpus_per_replica=args.gpus_per_replica)
        if len(groups) == 1:
            args.gpus = groups[0]
        return replica_endpoints(endpoints[0], len(groups)), len(groups)
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    from tgi.api import workers

    if os.environ.get(workers.WORKER_ENV) is not None:  # a worker of a --workers gateway: settings on stdin
        settings = workers.decode_settings(Settings, sys.stdin.read())
        slot = workers.worker_slot(settings)
    else:
        settings, slot = settings_from_args(argv), None
    from tgi.ops.logs import configure_logging, secrets_from_env

    configure_logging(level=settings.log_level, fmt=settings.log_format,
                      secrets=(*settings.api_keys, *secrets_from_env()))
    if settings.workers > 1 and slot is None:
        return workers.supervise(settings, command=[sys.executable, str(Path(__file__).resolve())])
    import uvicorn

    try:
        app = create_app(settings, worker=slot)
    except GatewayError as exc:
        logging.getLogger("gateway.startup").error("start-up failed (exit code 2): %s", exc.message)
        return EXIT_USAGE
    logging.getLogger("uvicorn.error").addFilter(UvicornStartupLine())
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
        lifespan="on", timeout_graceful_shutdown=10, log_config=None,  # our handler and format (tgi/ops/logs.py)
        # longer than clients keep idle connections (httpx and so openai-python: 5 s): at uvicorn's own 5 s a
        # client reusing a connection races the server closing it and gets a connection error
        timeout_keep_alive=65,
    )
    server = uvicorn.Server(config)
    try:
        if slot is None:
            server.run()
        else:
            try:
                sock = workers.bind_port(settings.host, settings.port)
            except OSError as exc:
                return report_startup_failure(workers.listen_failure(settings.host, settings.port, exc),
                                              debug=settings.log_level.lower() == "debug")
            server.run(sockets=[sock])
    except SystemExit:  # uvicorn's own exit on a failed start-up (the lifespan, or binding --host/--port)
        pass
    # uvicorn swallows a failed lifespan start-up: the lifespan logged it and chose the exit code (tgi/api/startup.py)
    if getattr(server, "started", False):
        return 0
    return getattr(app.state, "exit_code", EXIT_LISTEN)  # the runtime started: the listening socket failed


if __name__ == "__main__":
    sys.exit(main())
