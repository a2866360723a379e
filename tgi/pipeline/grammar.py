"""TGI grammars for tool calls and ``response_format``: what to send, and whether TGI takes it.

TGI constrains a whole generation to a ``grammar`` (tgi-protocol.md §8): ``{"type": "json", "value": schema}``
where the schema needs a top-level ``properties``, or ``{"type": "regex", "value": ...}``. This module holds

* the mappings: a tool's ``parameters`` -> :func:`arguments_grammar`, OpenAI's ``response_format`` ->
  :func:`response_grammar`, declared tool names -> :func:`literal_regex`. A schema TGI cannot take gives
  ``None``: that part is generated unconstrained, with a warning, never an error;
* :class:`GrammarSupport`: the ``--grammar auto|on|off`` mode and what each endpoint was found to accept
  (a start-up probe that costs no generation, then any ``grammar is not supported`` rejection), plus the
  grammars TGI refused to compile, and counters for the cost of guided generation;
* :func:`plan_grammar`: what one request constrains (:class:`GrammarPlan`), decided before TGI is called.

The generation itself (several TGI requests per answer) is ``tgi/pipeline/guided.py``; the design is in docs/grammar.md.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from functionary.errors import InvalidRequestError
from functionary.openai_types import ResponseFormat
from functionary.templates.base import PreparedRequest, PromptTemplate
from tgi.protocol.errors import UpstreamError, UpstreamValidationError
from tgi.protocol.types import GenerateParameters, GenerateRequest, Grammar

log = logging.getLogger("gateway.grammar")

__all__ = [
    "GrammarMode",
    "GrammarPlan",
    "GrammarStats",
    "GrammarSupport",
    "JSON_OBJECT_REGEX",
    "arguments_grammar",
    "literal_regex",
    "plan_grammar",
    "rejection_kind",
    "response_grammar",
]

GrammarMode = Literal["auto", "on", "off"]

# -- JSON Schema -> TGI grammar -------------------------------------------------------------------

# Any JSON object, nested at most two levels, as a regex (TGI's json grammar cannot say "any object": a schema
# needs ``properties``, and ``{"properties": {}}`` allows only ``{}``). Whitespace as outlines writes it.
_WS = "[ ]?"
_STRING = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_SCALAR = f"{_STRING}|{_NUMBER}|true|false|null"


def _json_value(depth: int) -> str:
    if depth == 0:
        return f"(?:{_SCALAR})"
    return f"(?:{_SCALAR}|{_json_object(depth - 1)}|{_json_array(depth - 1)})"


def _json_object(depth: int) -> str:
    member = f"{_STRING}{_WS}:{_WS}{_json_value(depth)}"
    return rf"\{{{_WS}(?:{member}(?:{_WS},{_WS}{member})*)?{_WS}\}}"


def _json_array(depth: int) -> str:
    value = _json_value(depth)
    return rf"\[{_WS}(?:{value}(?:{_WS},{_WS}{value})*)?{_WS}\]"


JSON_OBJECT_REGEX = _json_object(2)

# Keywords that leave an object schema free-form ("any object") when nothing else is said.
_ANNOTATIONS = frozenset({"type", "title", "description", "$schema", "$id", "$comment", "examples", "default"})


def arguments_grammar(parameters: Any) -> Grammar | None:
    """The grammar of a tool's arguments; ``None`` when TGI cannot take the schema (no top-level
    ``properties``, e.g. a top-level ``anyOf``)."""
    if parameters is None:
        return Grammar(type="json", value={"type": "object", "properties": {}})  # a call without arguments: {}
    return _object_grammar(parameters)


def _object_grammar(schema: Any) -> Grammar | None:
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("properties"), dict):
        return Grammar(type="json", value=schema)
    free = schema.get("additionalProperties", True) is True
    if schema.get("type") in ("object", None) and free and set(schema) - {"additionalProperties"} <= _ANNOTATIONS:
        return Grammar(type="regex", value=JSON_OBJECT_REGEX)  # {} or {"type": "object"}: any object
    return None


def response_grammar(fmt: ResponseFormat | None) -> tuple[Grammar | None, bool]:
    """(grammar, wanted): the grammar of the answer for OpenAI's ``response_format``, and whether JSON was
    asked for at all (``wanted`` with no grammar: TGI cannot take the schema). Malformed formats are a 400."""
    if fmt is None or fmt.type == "text":
        return None, False
    if fmt.type == "json_object":
        return Grammar(type="regex", value=JSON_OBJECT_REGEX), True
    spec = fmt.json_schema
    if not isinstance(spec, dict):
        raise InvalidRequestError(
            "Missing required parameter: 'response_format.json_schema'.", param="response_format.json_schema"
        )
    schema = spec.get("schema")
    if schema is None:
        return Grammar(type="regex", value=JSON_OBJECT_REGEX), True
    if not isinstance(schema, dict):
        raise InvalidRequestError(
            "'response_format.json_schema.schema' must be a JSON Schema object", param="response_format.json_schema"
        )
    return _object_grammar(schema), True


def literal_regex(alternatives: Iterable[str]) -> str:
    """A regex that matches exactly one of ``alternatives`` (escaped for TGI's regex engine: metacharacters
    with a backslash, newlines and tabs as ``\\n``/``\\t``)."""
    return "(?:" + "|".join(_escape(text) for text in alternatives) + ")"


_META = frozenset("\\.^$|?*+()[]{}")


def _escape(text: str) -> str:
    out = []
    for c in text:
        if c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif c in _META:
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def grammar_key(grammar: Grammar) -> str:
    return grammar.type + ":" + json.dumps(grammar.value, sort_keys=True, separators=(",", ":"))


# -- what TGI accepts ----------------------------------------------------------------------------


def rejection_kind(exc: UpstreamError) -> Literal["unsupported", "grammar"] | None:
    """Why TGI refused a request that carried a grammar: ``unsupported`` (``--disable-grammar-support``),
    ``grammar`` (this grammar: not valid, no ``properties``, cannot be compiled), or ``None`` (not the
    grammar's fault)."""
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
    """Counters for the cost of guided generation (plain integer adds; read by benchmarks and metrics)."""

    requests: int = 0  # choices generated under a GrammarPlan
    tgi_requests: int = 0  # TGI generations they took (an unconstrained answer takes 1)
    constrained: int = 0  # of which carried a grammar
    cuts: int = 0  # free generations stopped where a call or the answer began, to go on constrained
    degraded: int = 0  # parts generated unconstrained because TGI refused the grammar

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

    ``auto`` uses grammars unless every endpoint is known to refuse them; ``on`` always sends them (an endpoint
    that refuses fails the request, and a probe that finds one refusing fails the start-up); ``off`` never."""

    def __init__(self, mode: GrammarMode = "auto", endpoints: Iterable[str] = ()) -> None:
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"grammar mode must be auto, on or off, not {mode!r}")
        self.mode: GrammarMode = mode
        self.endpoints: dict[str, bool | None] = {url: None for url in endpoints}
        self.stats = GrammarStats()
        self._refused: OrderedDict[str, None] = OrderedDict()  # grammar keys TGI would not compile
        self._warned: OrderedDict[str, None] = OrderedDict()

    @property
    def active(self) -> bool:
        if self.mode == "off":
            return False
        if self.mode == "on" or not self.endpoints:
            return True
        return any(state is not False for state in self.endpoints.values())

    def record(self, endpoint: str | None, supported: bool) -> None:
        if endpoint is None:
            return
        before = self.endpoints.get(endpoint)
        self.endpoints[endpoint] = supported
        if before is not supported:
            log.info("grammar support at %s: %s", endpoint, "yes" if supported else "no (--disable-grammar-support)")

    async def probe(self, clients: Iterable) -> None:
        """Ask each endpoint (a :class:`tgi.protocol.client.TGIClient`) whether it takes grammars. The probe's schema
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

    def refused(self, grammar: Grammar) -> bool:
        return bool(self._refused) and grammar_key(grammar) in self._refused

    def refuse(self, grammar: Grammar, reason: str) -> None:
        key = grammar_key(grammar)
        self._refused[key] = None
        while len(self._refused) > 512:
            self._refused.popitem(last=False)
        self.warn(key, f"TGI refused a grammar; that part is generated unconstrained: {reason}")

    def warn(self, key: str, message: str) -> None:
        """Log ``message`` once per ``key`` (a bounded memory: a busy gateway logs a recurring one again later)."""
        if key in self._warned:
            return
        self._warned[key] = None
        while len(self._warned) > 512:
            self._warned.popitem(last=False)
        log.warning("%s", message)


# -- one request ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrammarPlan:
    """What one request constrains. ``names``: every callable name (a ``required`` choice picks one of them
    under a regex); ``calls``: the tools whose arguments have a grammar; ``response``: the answer's grammar."""

    names: tuple[str, ...] = ()
    calls: dict[str, Grammar] = field(default_factory=dict)
    response: Grammar | None = None


def plan_grammar(
    *, prepared: PreparedRequest, response_format: ResponseFormat | None, template: PromptTemplate,
    support: GrammarSupport,
) -> GrammarPlan | None:
    """The :class:`GrammarPlan` of a request, or ``None`` when nothing is constrained. A malformed
    ``response_format`` is a 400 whatever the mode; everything TGI could not take is only a warning."""
    response, wants_json = response_grammar(response_format)
    calling = bool(prepared.tools) and prepared.choice.kind != "none"
    if not (wants_json or calling):
        return None
    if not support.active:
        if wants_json:
            support.warn("off", "response_format is not enforced: grammar is off (--grammar, or TGI refuses grammars)")
        return None
    names: list[str] = []
    calls: dict[str, Grammar] = {}
    if calling and template.call_prefix("f") is not None:
        for tool in prepared.tools:
            fn = tool if prepared.legacy_functions else tool.get("function")
            if fn is None:  # the code interpreter: its arguments are code
                names.append("python")
                continue
            name = fn["name"]
            names.append(name)
            grammar = arguments_grammar(fn.get("parameters"))
            if grammar is None:
                support.warn("schema:" + name, f"the parameters of {name!r} have no top-level 'properties', which "
                             "TGI's grammar needs: its arguments are generated unconstrained")
            elif not support.refused(grammar):
                calls[name] = grammar
    elif calling:
        support.warn("template:" + template.version, f"prompt template {template.version} has no grammar hooks: "
                     "tool calls are generated unconstrained")
    if wants_json:
        if response is None:
            support.warn("response", "response_format's schema has no top-level 'properties', which TGI's grammar "
                         "needs: the answer is generated unconstrained")
        elif template.content_prefix() is None:
            support.warn("content:" + template.version, f"prompt template {template.version} cannot constrain the "
                         "answer: response_format is not enforced")
            response = None
        elif support.refused(response):
            response = None
    if not calls and response is None and not (names and prepared.choice.kind == "required"):
        return None
    return GrammarPlan(names=tuple(dict.fromkeys(names)), calls=calls, response=response)
