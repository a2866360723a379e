"""The prompt-template contract shared by every version.

A template does four things (STYLE 4):
  * ``render(prepared)`` -> the exact prompt string sent to TGI: no BOS (TGI adds it), the
    generation prompt included, followed by the prefix that enforces the tool choice;
  * names its ``stop_tokens`` / ``special_tokens`` / ``eos_tokens``;
  * ``stream_parser(prepared)`` -> a fresh :class:`StreamParser` fed one token text at a time (the
    text the model wrote AFTER the rendered prompt, special tokens included, the final stop token
    removed by the caller);
  * ``parse(text, prepared)`` -> the complete :class:`ParsedOutput`. The default runs the streaming
    parser over the whole text, so both modes agree by construction.

Parsers speak in small events (:class:`TextDelta`, :class:`ToolCallStart`, :class:`ArgumentsDelta`);
``functionary/assemble.py`` turns them into OpenAI messages / chunks (ids, ``index``, finish reasons,
legacy ``function_call``), so no template deals with OpenAI's delta rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Union

if TYPE_CHECKING:
    from functionary.turn_syntax import TurnSyntax

# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """The effective tool choice after the request analysis."""

    kind: Literal["auto", "none", "required", "named"]
    name: str | None = None  # set for kind == "named"

    @property
    def is_named(self) -> bool:
        return self.kind == "named"


AUTO = ToolChoice("auto")
NONE = ToolChoice("none")
REQUIRED = ToolChoice("required")


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A validated request in the shape every template renders from.

    ``messages``: one dict per message with exactly the keys ``role``, ``content`` (str or None;
    content parts already joined), ``name``, ``tool_calls`` (None or a list of
    ``{"id", "type": "function", "function": {"name", "arguments"}}``), ``tool_call_id`` and
    ``function_call`` (None or ``{"name", "arguments"}``); absent fields are None; tool results
    already reordered to follow the order of the calls; ``developer`` became ``system``.

    ``tools``: the tools the prompt shows, after the tool choice was applied (``none`` -> [],
    a named choice -> only that tool, or the definition the choice carried) and ``$ref`` resolved.
    Each is ``{"type": "function", "function": {"name", "description", "parameters"}}`` or
    ``{"type": "code_interpreter"}``; with ``legacy_functions`` each is a bare function
    ``{"name", "description", "parameters"}`` instead (the request used ``functions``).
    """

    messages: tuple[dict, ...]
    tools: tuple[dict, ...]
    choice: ToolChoice
    legacy_functions: bool = False


# ---------------------------------------------------------------------------------------------
# Parser events and results


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A new call begins; its name is final. Code-interpreter calls use the name ``python``."""

    name: str


@dataclass(frozen=True, slots=True)
class ArgumentsDelta:
    """More argument text for the call started last (the model's own text, never re-serialised)."""

    text: str


Event = Union[TextDelta, ToolCallStart, ArgumentsDelta]


@dataclass(slots=True)
class ParsedCall:
    name: str
    arguments: str = ""


@dataclass(slots=True)
class ParsedOutput:
    content: str | None = None
    tool_calls: list[ParsedCall] = field(default_factory=list)

    @classmethod
    def from_events(cls, events: list[Event]) -> "ParsedOutput":
        out = cls()
        text: list[str] = []
        for ev in events:
            if isinstance(ev, TextDelta):
                text.append(ev.text)
            elif isinstance(ev, ToolCallStart):
                out.tool_calls.append(ParsedCall(ev.name))
            else:
                out.tool_calls[-1].arguments += ev.text
        out.content = "".join(text) if text else None
        return out


class StreamParser:
    """Incremental parser: ``feed`` one token text at a time, then ``finish`` once.

    Rules every implementation keeps: the concatenated events are the same for ANY split of the
    input (a marker such as ``>>>`` or ``<function=`` may arrive in pieces: keep a short buffer for
    a possible marker prefix, never rescan the whole text); cost linear in the output; never
    raises on odd model output (invalid JSON arguments are passed through as text).
    """

    def feed(self, text: str) -> list[Event]:
        raise NotImplementedError

    def finish(self) -> list[Event]:
        """End of output: flush whatever is held back."""
        raise NotImplementedError


class StripSegment:
    """Passes on a segment's text as ``.strip()`` would leave it, under any chunking: leading
    whitespace is dropped, a whitespace run is held back until more text follows it, and whatever
    is held when the segment ends is dropped."""

    __slots__ = ("started", "_pending")

    def __init__(self) -> None:
        self.started = False
        self._pending = ""

    def push(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
            self.started = True
        body = text.rstrip()
        if not body:
            self._pending += text
            return ""
        out = self._pending + body if self._pending else body
        self._pending = text[len(body):]
        return out


class StrippingParser(StreamParser):
    """Feeds ``inner`` the text as ``text.strip()`` would leave it, under any chunking."""

    __slots__ = ("_inner", "_segment")

    def __init__(self, inner: StreamParser) -> None:
        self._inner = inner
        self._segment = StripSegment()

    def feed(self, text: str) -> list[Event]:
        text = self._segment.push(text)
        return self._inner.feed(text) if text else []

    def finish(self) -> list[Event]:
        return self._inner.finish()


class NamedCallParser(StreamParser):
    """Announces the call a named tool choice opened in the prompt ahead of ``inner``'s first
    events; ``inner`` starts inside that call's arguments."""

    __slots__ = ("_inner", "_name")

    def __init__(self, inner: StreamParser, name: str) -> None:
        self._inner = inner
        self._name: str | None = name

    def feed(self, text: str) -> list[Event]:
        if self._name is None:
            return self._inner.feed(text)
        return self._opening() + self._inner.feed(text)

    def finish(self) -> list[Event]:
        return self._opening() + self._inner.finish()

    def _opening(self) -> list[Event]:
        if self._name is None:
            return []
        name, self._name = self._name, None
        return [ToolCallStart(name)]


def announce_named_call(choice: ToolChoice, inner: StreamParser) -> StreamParser:
    """``inner`` as is, or behind a :class:`NamedCallParser` when the choice names a tool."""
    return NamedCallParser(inner, choice.name or "") if choice.is_named else inner


class BufferedParser(StreamParser):
    """A parser that appends each token to a buffer and lets ``_run`` consume what it can: ``final``
    says the output has ended. Events go to ``self._out``; ``_segment`` strips the text or arguments
    being passed on (a fresh one for each new segment); ``_scan`` is where a marker search resumes."""

    def __init__(self) -> None:
        self._buf = ""
        self._out: list[Event] = []
        self._segment = StripSegment()
        self._scan = 0

    def _run(self, *, final: bool) -> None:
        raise NotImplementedError

    def feed(self, text: str) -> list[Event]:
        self._buf += text
        self._run(final=False)
        out, self._out = self._out, []
        return out

    def finish(self) -> list[Event]:
        self._run(final=True)
        out, self._out = self._out, []
        return out

    def _emit(self, raw: str, *, text: bool) -> None:
        """Pass on ``raw`` as the current segment's stripping leaves it, as text or as arguments."""
        chunk = self._segment.push(raw) if raw else ""
        if chunk:
            self._out.append(TextDelta(chunk) if text else ArgumentsDelta(chunk))


# ---------------------------------------------------------------------------------------------
# The template base class


class PromptTemplate:
    version: ClassVar[str]
    stop_tokens: ClassVar[tuple[str, ...]]  # sent to TGI as stop sequences (besides the EOS)
    eos_tokens: ClassVar[tuple[str, ...]] = ()  # the tokenizer's EOS texts for this family
    special_tokens: ClassVar[tuple[str, ...]] = ()  # texts that are single special tokens

    def render(self, prepared: PreparedRequest) -> str:
        raise NotImplementedError

    def make_parser(self, prepared: PreparedRequest) -> StreamParser:
        """A fresh parser for this version, fed the model's text with surrounding whitespace
        already stripped (upstream parses ``text.strip()``)."""
        raise NotImplementedError

    def stream_parser(self, prepared: PreparedRequest) -> StreamParser:
        return StrippingParser(self.make_parser(prepared))

    def parse(self, text: str, prepared: PreparedRequest) -> ParsedOutput:
        parser = self.stream_parser(prepared)
        events = parser.feed(text)
        events.extend(parser.finish())
        return ParsedOutput.from_events(events)

    def check(self, prepared: PreparedRequest) -> None:
        """Raise InvalidRequestError/UnsupportedRequestError for requests this version cannot
        render (called before render). Default: everything is fine."""

    # -- grammar: how an assistant turn is spelled (functionary/turn_grammar.py, docs/grammar.md)

    def turn_syntax(self, prepared: PreparedRequest) -> "TurnSyntax | None":
        """The spelling of this version's assistant turn after the prompt rendered for ``prepared``;
        ``None`` (the default) means its output cannot be grammar-constrained."""
        return None

    def end_tokens(self) -> tuple[str, ...]:
        """Every text that ends a turn: the stop tokens, then the EOS texts."""
        return tuple(dict.fromkeys((*self.stop_tokens, *self.eos_tokens)))
