"""Start-up of the TGI side of the gateway, as one async context manager.

Finds the tokenizer files (a local directory, or the tokenizer files of a hub id), picks the
prompt template, probes the endpoints (and launches a container when none answers, unless told
not to), reads TGI's limits from ``/info`` and opens the endpoint pool. Everything it opens is
closed on exit, a container it started included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from functionary.detect import detect_template
from functionary.errors import GatewayError, ModelNotFoundError
from functionary.templates import get_template
from tgi.api.startup import EXIT_MODEL, EXIT_USAGE, StartupError
from tgi.cluster.discovery import DnsDiscovery, lookup_urls
from tgi.cluster.pool import EndpointPool, same_model
from tgi.cluster.probe import Kind, Probe, probe_all
from tgi.pipeline.chat import ChatService
from tgi.pipeline.grammar import GrammarSupport
from tgi.pipeline.params import Limits
from tgi.pipeline.prompt_size import max_bytes_per_token
from tgi.protocol.client import TGIClient
from tgi.protocol.types import Info

log = logging.getLogger("gateway.runtime")


@dataclass
class Runtime:
    chat: ChatService
    pool: EndpointPool
    limits: Limits
    model_names: frozenset[str]
    template_version: str
    started: int
    backend: str = "tgi"

    def check_model(self, requested: str | None) -> None:
        """A request naming a model: one this gateway serves, or a 404 (chat and Responses alike)."""
        if requested is not None and requested not in self.model_names:
            raise ModelNotFoundError(
                f"The model '{requested}' does not exist; this server serves '{self.chat.model_name}'.",
                param="model",
            )

    async def health(self) -> dict:
        states = await self.pool.health()
        return {
            "gateway": {"healthy": True, "template": self.template_version, "backend": self.backend},
            "tgi": {"healthy": any(s["healthy"] for s in states), "endpoints": states},
        }


# texts from this length on are tokenized with encode_batch, which releases the GIL (encode holds it), so a
# long prompt tokenized on a worker thread (ChatService.plan_async) leaves the event loop running
_LONG_TEXT = 16 * 1024


def token_counter(model_dir: Path | None) -> Callable[[str], int]:
    """Counts prompt tokens as TGI will (``add_special_tokens=True``: the BOS is counted).

    The tokenizer cuts the text at its special tokens before anything else, so the pieces between
    them are tokenized independently: their counts are cached, and the long system / tools part
    that most requests share costs nothing after the first request. The counter's
    ``bytes_per_token`` attribute is the most prompt bytes one token covers (tgi/pipeline/prompt_size.py)."""
    path = model_dir / "tokenizer.json" if model_dir is not None else None
    if path is None or not path.is_file():
        log.warning("no tokenizer.json found: prompt lengths are estimated (4 bytes a token)")
        return lambda text: len(text.encode("utf-8")) // 4 + 1
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    count = _exact_counter(tokenizer)
    count.bytes_per_token = max_bytes_per_token(tokenizer)  # type: ignore[attr-defined]
    return count


def _encoded_length(tokenizer, text: str, special: bool) -> int:
    if len(text) >= _LONG_TEXT:
        return len(tokenizer.encode_batch([text], add_special_tokens=special)[0].ids)
    return len(tokenizer.encode(text, add_special_tokens=special).ids)


def _exact_counter(tokenizer) -> Callable[[str], int]:
    specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
    extra = len(tokenizer.encode("", add_special_tokens=True).ids)  # BOS and friends
    if not specials:
        return lambda text: _encoded_length(tokenizer, text, True)
    splitter = re.compile("(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")")
    special_set = frozenset(specials)

    @lru_cache(maxsize=4096)
    def piece(text: str) -> int:
        return _encoded_length(tokenizer, text, False)

    def count(text: str) -> int:
        total = extra
        for part in splitter.split(text):
            if part in special_set:
                total += 1
            elif len(part) >= _LONG_TEXT:  # not cached: the cache would keep megabytes of text
                total += _encoded_length(tokenizer, part, False)
            elif part:
                total += piece(part)
        return total

    return count


async def _tokenizer_dir(settings) -> Path | None:
    local = Path(settings.model).expanduser()
    if local.is_dir():
        return local
    from tgi.launch.weights import WeightsNotFoundError, fetch_tokenizer_files

    try:
        return await fetch_tokenizer_files(
            settings.model, revision=settings.revision, cache_dir=Path(settings.remote_model_save_folder), token=None
        )
    except WeightsNotFoundError as exc:
        # the Hub answered that there is no such model (404) or revision: that is the reason, not the template
        raise StartupError(exc.message, exit_code=EXIT_MODEL) from None
    except GatewayError as exc:  # no Hub, or no access: the model id and TGI's /info may still do
        log.warning("could not fetch tokenizer files for %s: %s", settings.model, exc.message)
        return None


async def _answering(clients: list[TGIClient]) -> list[TGIClient]:
    """The endpoints that answer like TGI (tgi/cluster/probe.py). One that answers but is not TGI stops the start at
    once, naming what answered; so does a port that accepts connections and never answers, unless another
    endpoint is TGI (it is then down, and may join later)."""
    probes = await probe_all([c.base_url for c in clients])
    wrong = [p for p in probes if p.kind is Kind.NOT_TGI]
    if wrong:
        raise StartupError(
            "not a TGI server: " + "; ".join(p.describe() for p in wrong)
            + ". Point --endpoint at TGI's base URL, or free that port for a TGI the gateway launches."
        )
    up = [c for c, p in zip(clients, probes) if p.kind is Kind.TGI]
    silent = [p for p in probes if p.kind is Kind.SILENT]
    if silent and not up:
        raise StartupError(
            "no TGI answers: " + "; ".join(p.describe() for p in silent)
            + ". Another program holds that port (find it with: ss -ltnp), or TGI there is stuck."
        )
    _log_down(probes)
    return up


def _log_down(probes: list[Probe]) -> None:
    for p in probes:
        if p.kind is Kind.DOWN or p.kind is Kind.SILENT:
            log.debug("TGI at %s is not answering: %s", p.url, p.detail)


@asynccontextmanager
async def open_runtime(settings, *, start_backends_here: bool = True) -> AsyncIterator[Runtime]:
    """``start_backends_here=False``: a ``--workers`` worker, whose supervisor started the backends."""
    async with AsyncExitStack() as stack:
        model_dir = await _tokenizer_dir(settings)
        version = detect_template(model_dir=model_dir, model_id=settings.model, override=settings.prompt_template)
        template = get_template(version)
        log.info("prompt template %s for %s", version, settings.model)

        launched = start_backends_here and await stack.enter_async_context(start_backends(settings))
        discovered = await _discover(settings)
        urls = list(dict.fromkeys([*settings.endpoints, *(u for found in discovered.values() for u in found)]))
        if not urls:
            raise StartupError("no TGI endpoint: " + ", ".join(discovered) + " resolves to no address")
        clients = [await stack.enter_async_context(TGIClient(url)) for url in urls]
        up = await _answering(clients)
        if up and start_backends_here and not launched and not settings.no_launch and not settings.emulator \
                and not discovered:
            await _note_attached(stack, settings.endpoints[0])
        if not up:
            patient = settings.no_launch or settings.emulator or launched or bool(discovered)
            up = await _wait_for_any(clients, settings.startup_timeout if patient else 5.0)
        if not up:
            raise StartupError(
                "no TGI endpoint answers: " + (", ".join(urls) or "(no address found)")
                + ". Start TGI there, or let the gateway launch one (drop --no-launch)."
            )

        reference, up = await _same_model(up)  # cluster: refuses endpoints that serve different models
        limits = await _limits(up[0], settings, model_dir)
        pool = await stack.enter_async_context(EndpointPool(
            clients, max_in_flight=settings.max_in_flight_per_endpoint,
            queue_timeout=settings.queue_timeout,
            health_interval=settings.health_interval, eject_after=settings.eject_after,
            reference=reference, down=[c.base_url for c in clients if c not in up],
        ))
        for name, found in discovered.items():
            await stack.enter_async_context(DnsDiscovery(
                pool, name, interval=settings.dns_interval, initial=found))
        grammar = await _grammar_support(settings.grammar, clients, up)
        counter = token_counter(model_dir)
        chat = ChatService(
            template=template, pool=pool, limits=limits, model_name=settings.model_name,
            count_tokens=counter, request_timeout=settings.request_timeout,
            grammar=grammar, bytes_per_token=getattr(counter, "bytes_per_token", None),
        )
        names = {settings.model_name, settings.model}
        yield Runtime(
            chat=chat, pool=pool, limits=limits, model_names=frozenset(names), template_version=version,
            started=int(time.time()), backend="tgi-emulator (canned answers, not a model)" if settings.emulator else "tgi",
        )


async def _note_attached(stack: AsyncExitStack, endpoint: str) -> None:
    """The endpoint already answers: when it is a container of ours, say so, and hold a lease on it so that the
    gateway that launched it leaves it running while this one uses it (tgi/launch/sharing.py)."""
    from tgi.launch.sharing import Lease, our_container_on

    name = await our_container_on(endpoint)
    if name is not None:
        log.info("attaching to running container %s at %s (another gateway launched it; this one leaves it "
                 "running on exit)", name, endpoint)
        stack.enter_context(Lease(name))


async def _grammar_support(mode: str, clients: list[TGIClient], up: list[TGIClient]) -> GrammarSupport:
    """``--grammar``: probe the answering endpoints (no generation); ``on`` refuses to start over one that
    refuses grammars."""
    support = GrammarSupport(mode, [c.base_url for c in clients])
    await support.probe(up)
    refusing = [url for url, ok in support.endpoints.items() if ok is False]
    if mode == "on" and refusing:
        raise StartupError(
            "--grammar on, but TGI at " + ", ".join(refusing) + " refuses grammars (launched with "
            "--disable-grammar-support): relaunch it without that flag, or use --grammar auto"
        )
    if mode != "off":
        log.info("grammar %s: %s", mode, "requests that ask for a guarantee get a 400 (TGI refuses grammars)"
                 if support.refused_everywhere else "in use")
    return support


@asynccontextmanager
async def start_backends(settings) -> AsyncIterator[bool]:
    """What the gateway starts besides itself, once per gateway (under ``--workers`` the supervisor does it,
    before the workers start): the emulator (``--emulator``); one TGI container per GPU group (``--replicas``,
    ``tgi/launch/replicas.py``); else one TGI container when no endpoint answers (unless ``--no-launch``).
    Yields whether anything was started; everything started is stopped on exit."""
    async with AsyncExitStack() as stack:
        started = True
        if settings.emulator:
            await stack.enter_async_context(run_emulator(settings.endpoints[0], model_id=settings.model))
        elif settings.no_launch or settings.endpoint_dns:
            started = False
        elif settings.replicas > 1:
            from tgi.launch.replicas import launch_replicas, replica_groups

            groups = replica_groups(settings.gpus, replicas=settings.replicas,
                                    gpus_per_replica=settings.gpus_per_replica)
            await stack.enter_async_context(launch_replicas(settings, groups=groups))
        else:
            async with AsyncExitStack() as probes:
                clients = [await probes.enter_async_context(TGIClient(url)) for url in settings.endpoints]
                started = not await _answering(clients)
            if started:
                from tgi.launch.launcher import launch_for_settings

                await stack.enter_async_context(launch_for_settings(settings))
        yield started


async def _discover(settings) -> dict[str, list[str]]:
    """``--endpoint-dns``: each name's endpoint URLs now; a name that resolves to nothing yet is looked up
    again every second until ``--startup-timeout`` (a TGI StatefulSet may start after the gateway)."""
    names = tuple(settings.endpoint_dns)
    found: dict[str, list[str]] = {name: [] for name in names}
    deadline = time.monotonic() + settings.startup_timeout
    while names:
        for name in names:
            found[name] = await lookup_urls(name)
        if any(found.values()) or time.monotonic() >= deadline:
            break
        log.info("waiting for %s to resolve", ", ".join(names))
        await asyncio.sleep(1.0)
    return found


@asynccontextmanager
async def run_emulator(endpoint: str, *, model_id: str) -> AsyncIterator[None]:
    """The bundled TGI emulator as a child process on the endpoint's port (``--emulator``)."""
    url = urlsplit(endpoint)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise StartupError(f"--emulator runs on this machine only; {endpoint} is not a loopback address",
                           exit_code=EXIT_USAGE)
    cmd = [
        sys.executable, "-m", "tgi.emulator", "--model-id", model_id, "--hostname", url.hostname,
        "--port", str(url.port or 80), "--demo",
    ]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=str(Path(__file__).resolve().parents[2]))
    log.warning("=" * 72)
    log.warning("EMULATOR MODE: answers come from the bundled TGI emulator, not from a model")
    log.warning("=" * 72)
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


async def _limits(client: TGIClient, settings, model_dir: Path | None) -> Limits:
    """Context limits: the CLI's, else TGI's ``/info``, else the model's config (a TGI build or a
    stand-in without ``/info`` still works, with a warning)."""
    try:
        info = await client.info()
    except (GatewayError, ValueError) as exc:
        log.warning("TGI at %s has no usable /info (%s): limits come from the flags or the model", client.base_url, exc)
        info = None
    if info is not None and info.model_id and info.model_id != settings.model:
        if Path(settings.model).name != Path(info.model_id).name:
            log.warning("TGI at %s serves %r, not %r", client.base_url, info.model_id, settings.model)
    max_total = settings.max_total_tokens or (info and info.max_total_tokens) or _model_context(model_dir)
    max_input = settings.max_input_tokens or (info and info.max_input_tokens) or (max_total - 1)
    return Limits(
        max_total_tokens=max_total,
        max_input_tokens=min(max_input, max_total - 1),
        max_stop_sequences=(info and info.max_stop_sequences) or 4,
        max_top_n_tokens=settings.max_top_n_tokens,
    )


def _model_context(model_dir: Path | None) -> int:
    for name, key in (("config.json", "max_position_embeddings"), ("tokenizer_config.json", "model_max_length")):
        try:
            value = json.loads((model_dir / name).read_text(encoding="utf-8")).get(key) if model_dir else None
        except (OSError, ValueError):
            value = None
        if isinstance(value, int) and 0 < value < 10_000_000:
            return value
    log.warning("context size unknown: assuming 4096 tokens (set --max_total_tokens)")
    return 4096


async def _same_model(up: list[TGIClient]) -> tuple[Info | None, list[TGIClient]]:
    """Refuses to start when the answering endpoints serve different models (``/info``: the same ``model_id``
    or ``model_sha``), naming each endpoint and its model. Returns the ``/info`` the others are held to and the
    endpoints ordered smallest context first, so that the limits fit every endpoint."""
    results = await asyncio.gather(*(c.info() for c in up), return_exceptions=True)
    infos = [(c, r) for c, r in zip(up, results) if isinstance(r, Info)]
    if not infos:
        return None, up
    reference = infos[0][1]
    if any(not same_model(info, reference) for _, info in infos):
        listing = "; ".join(f"{c.base_url} serves {info.model_id!r}" for c, info in infos)
        raise StartupError(
            f"the TGI endpoints serve different models: {listing}. Every endpoint of one gateway must serve the "
            "same model (compared by /info model_id, or model_sha): fix or drop the odd ones."
        )
    sizes = {info.max_total_tokens for _, info in infos}
    if len(sizes) > 1:
        log.warning("the TGI endpoints have different max_total_tokens (%s): using the smallest",
                    ", ".join(str(s) for s in sorted(sizes, key=lambda v: (v is None, v))))
    ordered = sorted(infos, key=lambda ci: ci[1].max_total_tokens or 1 << 62)
    return reference, [c for c, _ in ordered] + [c for c in up if c not in {c for c, _ in infos}]


async def _wait_for_any(clients: list[TGIClient], timeout: float) -> list[TGIClient]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = await _answering(clients)
        if up:
            return up
        log.info("waiting for TGI at %s", ", ".join(c.base_url for c in clients))
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return []
