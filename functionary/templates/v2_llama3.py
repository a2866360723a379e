"""Prompt template v2.llama3 (functionary v2.5 on Llama 3): llama3 headers, calls introduced by
``<|reserved_special_token_249|>{name}\\n{arguments}``.

Prompts are the ones upstream served these models with (f44585c, before its jinja refactor):

    <|start_header_id|>system<|end_header_id|>\\n\\n{functions namespace}<|eot_id|>
    <|start_header_id|>system<|end_header_id|>\\n\\n{default or code-interpreter text}<|eot_id|>
    <|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>           (system, user)
    <|start_header_id|>tool<|end_header_id|>\\n\\nname={name}\\n{content}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n{text}{SEP}{name}\\n{args}...<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n                         (generation prompt)

A history with a legacy ``function`` message is rendered as upstream a8b0de1 did (f44585c crashed
on it): ``function`` is a header like any other, an assistant turn always gets its ``<|eot_id|>``.

The model's output: optional text, then calls ``{SEP}{name}\\n{arguments}``; text only before the
first call.
"""

from __future__ import annotations

import enum

from functionary.templates.base import (
    BufferedParser, PreparedRequest, PromptTemplate, StreamParser, StripSegment, ToolCallStart, ToolChoice,
    announce_named_call,
)
from functionary.templates._markers import find_first, partial_marker_len, rescan_from, take_until
from functionary.templates._tokens import EOT, LLAMA3_END, LLAMA3_SPECIAL, header
from functionary.templates.v2 import require_tool_names
from functionary.turn_syntax import NAME, TurnSyntax
from functionary.typescript_v2 import preamble_texts

SEP = "<|reserved_special_token_249|>"


class V2Llama3Template(PromptTemplate):
    version = "v2.llama3"
    stop_tokens = LLAMA3_END
    eos_tokens = LLAMA3_END
    special_tokens = (*LLAMA3_SPECIAL, SEP)

    def check(self, prepared: PreparedRequest) -> None:
        require_tool_names(prepared, self.version)

    def render(self, prepared: PreparedRequest) -> str:
        schema, system = preamble_texts(prepared.tools)
        legacy = any(m["role"] == "function" for m in prepared.messages)
        render_one = _legacy_message if legacy else _message
        parts = [f"{header('system')}{schema}{EOT}", f"{header('system')}{system}{EOT}"]
        parts.extend(render_one(m) for m in prepared.messages)
        parts.append(header("assistant"))
        choice = prepared.choice
        if choice.kind == "required":
            parts.append(SEP)
        elif choice.kind == "named":
            parts.append(f"{SEP}{choice.name}\n")
        return "".join(parts)

    def make_parser(self, prepared: PreparedRequest) -> StreamParser:
        return announce_named_call(prepared.choice, V2Llama3Parser(prepared.choice))

    def turn_syntax(self, prepared: PreparedRequest) -> TurnSyntax:
        choice = prepared.choice
        tail = SEP if choice.kind == "required" else f"{SEP}{choice.name}\n" if choice.kind == "named" else ""
        return TurnSyntax(
            tail=tail, text_avoid=(SEP,), call_open=f"{SEP}{NAME}\n", code_open=f"{SEP}python\n", code_body=(SEP,),
            args_avoid=(SEP,), end=self.end_tokens(),
        )


def _calls_text(message: dict) -> str:
    return "".join(f"{SEP}{c['function']['name']}\n{c['function']['arguments']}" for c in message["tool_calls"] or [])


def _message(message: dict) -> str:
    role, content = message["role"], message["content"]
    if role in ("system", "user"):
        return f"{header(role)}{content}{EOT}"
    if role == "tool":
        return f"{header(role)}name={message['name']}\n{content}{EOT}"
    calls = _calls_text(message)
    if content is None and not calls:  # nothing to say: a bare header, as upstream rendered it
        return header(role)
    return f"{header(role)}{'' if content is None else content}{calls}{EOT}"


def _legacy_message(message: dict) -> str:
    role, content = message["role"], message["content"]
    if role in ("system", "user", "tool"):
        return _message(message)
    return f"{header(role)}{content or ''}{_calls_text(message)}{EOT}"


# ---------------------------------------------------------------------------------------------


class _Stage(enum.Enum):
    TEXT = "text"  # text before the first call
    NAME = "name"  # after SEP: a function name up to "\n"
    ARGS = "args"  # arguments up to the next SEP


_SEPS = (SEP,)
_NAME_ENDS = ("\n", SEP)


class V2Llama3Parser(BufferedParser):
    """Text (stripped) up to the first separator; then each ``{SEP}{name}\\n{arguments}`` is a call,
    name and arguments stripped. A name that never reaches its newline (output cut short) is a
    call with empty arguments; a separator with no name is ignored."""

    __slots__ = ("_stage", "_buf", "_scan", "_name_started", "_segment", "_out")

    def __init__(self, choice: ToolChoice) -> None:
        super().__init__()
        self._name_started = False
        self._stage = _Stage.TEXT
        if choice.kind == "required":
            self._stage = _Stage.NAME
        elif choice.kind == "named":
            self._stage = _Stage.ARGS  # the prompt opened the call (announce_named_call names it)

    def _run(self, *, final: bool) -> None:
        while True:
            if self._stage is _Stage.NAME:
                if not self._name_started:
                    self._buf = self._buf.lstrip()
                    if not self._buf:
                        return
                    self._name_started = True
                i, marker = find_first(self._buf, _NAME_ENDS, self._scan)
                if i < 0:
                    if final:  # cut short: drop a separator's beginning, keep the name
                        cut = len(self._buf) - partial_marker_len(self._buf, _SEPS)
                        self._start_call(self._buf[:cut], then=_Stage.NAME)
                        self._buf = ""
                        return
                    self._scan = rescan_from(self._buf, _NAME_ENDS)
                    return
                name, self._buf = self._buf[:i], self._buf[i + len(marker):]
                self._scan, self._name_started = 0, False
                self._start_call(name, then=_Stage.ARGS if marker == "\n" else _Stage.NAME)
                continue
            before, self._buf, found = take_until(self._buf, _SEPS, final=final)
            self._emit(before, text=self._stage is _Stage.TEXT)
            if not found:
                return
            self._stage, self._scan, self._name_started = _Stage.NAME, 0, False

    def _start_call(self, name: str, *, then: _Stage) -> None:
        name = name.strip()
        if name:
            self._out.append(ToolCallStart(name))
            if then is _Stage.ARGS:
                self._segment = StripSegment()
                self._stage = _Stage.ARGS
                return
        self._stage = _Stage.NAME
