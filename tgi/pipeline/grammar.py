"""``--grammar auto|on|off``: which requests get a TGI grammar, and whether the TGI behind the gateway takes them.

A request that asks for a guarantee (``tool_choice`` required or named, ``strict`` tools, ``response_format``
``json_object`` / ``json_schema``, ``parallel_tool_calls: false``) is ONE TGI request with the unchanged prompt
and ``{"type": "regex", "value": ...}``: the whole assistant turn, built by ``functionary/turn_grammar.py``. This
module decides per request (:meth:`GrammarSupport.grammar_for`), caps the answer to what TGI keeps a grammar for,
and probes each endpoint at start-up (no generation) for ``--disable-grammar-support``. Design: docs/grammar.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from functionary.errors import InvalidRequestError
from functionary.openai_types import ChatCompletionRequest
from functionary.templates.base import PreparedRequest, PromptTemplate
from functionary.turn_grammar import response_schema, whole_turn_regex
from tgi.protocol.errors import UpstreamError, UpstreamValidationError
from tgi.protocol.types import GenerateParameters, GenerateRequest, Grammar

log = logging.getLogger("gateway.grammar")

__all__ = ["GRAMMAR_TOKEN_LIMIT", "GrammarMode", "GrammarStats", "GrammarSupport", "GrammarUnsupportedError",
           "rejection_kind"]

GrammarMode = Literal["auto", "on", "off"]

# TGI requeues a generation every 1,024 tokens and does not keep its grammar across (tgi-protocol.md §14):
# a constrained answer is capped there, so what the client gets is either whole and fitting or cut (length).
GRAMMAR_TOKEN_LIMIT = 1024


class GrammarUnsupportedError(InvalidRequestError):
    """The request asks for a guarantee and the TGI behind the gateway refuses grammars: never a silently
    unkept promise."""

    default_code = "grammar_unsupported"


def rejection_kind(exc: UpstreamError) -> Literal["unsupported", "grammar"] | None:
    """Why TGI refused a request that carried a grammar: ``unsupported`` (``--disable-grammar-support``),
    ``grammar`` (this grammar: not valid, no ``properties``, cannot be compiled), or ``None``."""
    if not isinstance(exc, UpstreamValidationError):
        return None
    message = exc.message
    if "grammar is not supported" in message:
        return "unsupported"
    if "grammar is not valid" in message or "cannot compile regex from schema" in message or "Grammar must" in message:
        return "grammar"
    return None


@dataclass(slots=True)
class GrammarStats:
    """Plain counters (read by benchmarks and tests): answers generated, and how many under a grammar."""

    requests: int = 0
    constrained: int = 0

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


_PROBE_REQUEST = GenerateRequest(
    inputs="grammar probe",
    parameters=GenerateParameters(
        max_new_tokens=1, details=True, grammar=Grammar(type="json", value={"type": "object"}),
    ),
)


class GrammarSupport:
    """``--grammar`` and what each endpoint accepts: ``True``/``False``/``None`` (not known yet).

    ``auto`` (default) constrains exactly the requests that ask for a guarantee; ``on`` every request with tools
    (every tool's arguments fit its schema); ``off`` none: the promises are then best effort, not kept."""

    def __init__(self, mode: GrammarMode = "auto", endpoints: Iterable[str] = ()) -> None:
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"grammar mode must be auto, on or off, not {mode!r}")
        self.mode: GrammarMode = mode
        self.endpoints: dict[str, bool | None] = {url: None for url in endpoints}
        self.stats = GrammarStats()

    @property
    def refused_everywhere(self) -> bool:
        """Every endpoint is known to refuse grammars."""
        return bool(self.endpoints) and all(state is False for state in self.endpoints.values())

    def grammar_for(
        self, *, template: PromptTemplate, request: ChatCompletionRequest, prepared: PreparedRequest
    ) -> Grammar | None:
        """The regex grammar of this request's whole answer, or ``None`` (one unconstrained generation). Raises
        a 400 for schemas outlines-core cannot express and where TGI refuses grammars."""
        self.stats.requests += 1
        if self.mode == "off":
            response_schema(request.response_format)  # a malformed response_format is a 400 in every mode
            return None
        regex = whole_turn_regex(template, request, prepared, every=self.mode == "on")
        if regex is None:
            return None
        if self.refused_everywhere:
            raise GrammarUnsupportedError(
                "this request asks for a guarantee (tool_choice, strict tools, response_format or "
                "parallel_tool_calls: false) that needs a TGI grammar, and the TGI behind this gateway refuses "
                "grammars (--disable-grammar-support)",
            )
        self.stats.constrained += 1
        return Grammar(type="regex", value=regex)

    def record(self, endpoint: str | None, supported: bool) -> None:
        if endpoint is None:
            return
        before = self.endpoints.get(endpoint)
        self.endpoints[endpoint] = supported
        if before is not supported:
            log.info("grammar support at %s: %s", endpoint, "yes" if supported else "no (--disable-grammar-support)")

    async def probe(self, clients: Iterable) -> None:
        """Ask each endpoint (a :class:`tgi.client.TGIClient`) whether it takes grammars. The probe's schema
        lacks ``properties``: TGI 2.3+ refuses it in validation, with a message that tells a disabled grammar
        apart from a bad one, so nothing is generated (older releases generate one token)."""
        if self.mode == "off":
            return
        for client in clients:
            try:
                await client.generate(_PROBE_REQUEST)
                supported: bool | None = True
            except UpstreamError as exc:
                kind = rejection_kind(exc)
                supported = None if kind is None else kind == "grammar"
                if supported is None:
                    log.info("grammar probe of %s was inconclusive: %s", client.base_url, exc.message)
            if supported is not None:
                self.record(client.base_url, supported)
