"""Prompt template v2 (functionary v2.x on Mistral): ``<|from|>`` / ``<|recipient|>`` /
``<|content|>`` turns closed by ``<|stop|>``.

Prompts are the ones upstream served these models with (f44585c, before its jinja refactor):

    <|from|>system\\n<|recipient|>all\\n<|content|>{functions namespace}\\n
    <|from|>system\\n<|recipient|>all\\n<|content|>{default or code-interpreter system text}\\n
    <|from|>{role or tool name}\\n<|recipient|>all\\n<|content|>{content}\\n        (system, user, tool)
    <|from|>assistant\\n<|recipient|>all\\n<|content|>{text}<|stop|>\\n             (a text turn)
    <|from|>assistant\\n<|recipient|>{name}\\n<|content|>{arguments}\\n ...<|stop|>\\n (calls, text first)
    <|from|>assistant\\n<|recipient|>                                                 (generation prompt)

A history with a legacy ``function`` message is rendered as upstream a8b0de1 did (f44585c crashed
on it): every turn opens with ``\\n``, assistant-like turns always close with ``<|stop|>``.

The model's output continues after ``<|recipient|>``: ``{recipient}\\n<|content|>{body}``, more
turns joined by ``\\n<|from|>assistant\\n<|recipient|>``. Recipient ``all`` is text. """

from __future__ import annotations

import enum

from functionary.errors import InvalidRequestError
from functionary.templates._markers import find_first, partial_marker_len, rescan_from, take_until
from functionary.templates.base import (
    ArgumentsDelta,
    BufferedParser,
    StripSegment,
    PreparedRequest,
    PromptTemplate,
    StreamParser,
    TextDelta,
    ToolCallStart,
    ToolChoice,
    announce_named_call,
)
from functionary.turn_syntax import NAME, TurnSyntax
from functionary.typescript_v2 import preamble_texts

FROM, RECIPIENT, CONTENT, STOP = "<|from|>", "<|recipient|>", "<|content|>", "<|stop|>"


class V2Template(PromptTemplate):
    version = "v2"
    stop_tokens = (STOP,)
    eos_tokens = ("</s>",)
    special_tokens = (FROM, RECIPIENT, CONTENT, STOP, "</s>")

    def check(self, prepared: PreparedRequest) -> None:
        require_tool_names(prepared, self.version)

    def render(self, prepared: PreparedRequest) -> str:
        schema, system = preamble_texts(prepared.tools)
        if any(m["role"] == "function" for m in prepared.messages):
            return _render_function_history(prepared, schema, system)
        parts = [_turn("system", schema), _turn("system", system)]
        parts.extend(_message(m) for m in prepared.messages)
        parts.append(f"{FROM}assistant\n{RECIPIENT}")
        parts.append(_choice_prefix(prepared.choice))
        return "".join(parts)

    def make_parser(self, prepared: PreparedRequest) -> StreamParser:
        return announce_named_call(prepared.choice, V2Parser(prepared.choice))

    def turn_syntax(self, prepared: PreparedRequest) -> TurnSyntax:
        # segments "<|from|>assistant\n<|recipient|>{recipient}\n<|content|>{body}" joined by "\n"; the
        # generation prompt wrote the first header
        head = f"{FROM}assistant\n{RECIPIENT}"
        return TurnSyntax(
            tail=head + _choice_prefix(prepared.choice), text_open=f"{head}all\n{CONTENT}", text_avoid=(FROM, STOP),
            text_sep="\n", call_open=f"{head}{NAME}\n{CONTENT}", call_sep="\\n", code_open=f"{head}python\n{CONTENT}",
            code_body=(FROM, STOP), args_avoid=(FROM, STOP), text_end=(STOP,), calls_end=(STOP,), end=self.end_tokens(),
        )


def require_tool_names(prepared: PreparedRequest, version: str) -> None:
    """The v2-era prompts name a tool result's sender; upstream crashed on a nameless one."""
    for i, message in enumerate(prepared.messages):
        if message["role"] == "tool" and message["name"] is None:
            raise InvalidRequestError(
                f"prompt template {version} needs the function name of every tool message: "
                f"set 'name' on messages[{i}]",
                param=f"messages[{i}].name",
            )


def _choice_prefix(choice: ToolChoice) -> str:
    if choice.kind == "none":
        return f"all\n{CONTENT}"
    if choice.kind == "named":
        return f"{choice.name}\n{CONTENT}"
    return ""


def _turn(sender: object, content: object) -> str:
    return f"{FROM}{sender}\n{RECIPIENT}all\n{CONTENT}{content}\n"


def _message(message: dict) -> str:
    role, content = message["role"], message["content"]
    if role in ("system", "user"):
        return _turn(role, content)
    if role == "tool":
        return _turn(message["name"], content)
    calls = message["tool_calls"] or []
    if not calls:
        if content is None:  # nothing to say: a bare header, as upstream rendered it
            return f"{FROM}assistant\n{RECIPIENT}"
        return f"{FROM}assistant\n{RECIPIENT}all\n{CONTENT}{content}{STOP}\n"
    body = f"{FROM}assistant\n{RECIPIENT}all\n{CONTENT}{content}\n" if content is not None else ""
    for call in calls:
        fn = call["function"]
        body += f"{FROM}assistant\n{RECIPIENT}{fn['name']}\n{CONTENT}{fn['arguments']}\n"
    # upstream stripped the whole turn, trailing whitespace of the last arguments included
    return body.strip() + f"{STOP}\n"


def _render_function_history(prepared: PreparedRequest, schema: str, system: str) -> str:
    out = [f"{FROM}system\n{RECIPIENT}all\n{CONTENT}{schema}", f"\n{FROM}system\n{RECIPIENT}all\n{CONTENT}{system}"]
    for message in prepared.messages:
        role, content = message["role"], message["content"]
        if role in ("system", "user"):
            out.append(f"\n{FROM}{role}\n{RECIPIENT}all\n{CONTENT}{content}")
        elif role == "tool":
            out.append(f"\n{FROM}{message['name']}\n{RECIPIENT}all\n{CONTENT}{content}")
        else:  # assistant, and a legacy function result rendered as a turn from "function"
            if content:
                out.append(f"\n{FROM}{role}\n{RECIPIENT}all\n{CONTENT}{content}")
            for call in message["tool_calls"] or []:
                fn = call["function"]
                out.append(f"\n{FROM}{role}\n{RECIPIENT}{fn['name']}\n{CONTENT}{fn['arguments']}")
            out.append(STOP)
    out.append(f"\n{FROM}assistant\n{RECIPIENT}")
    out.append(_choice_prefix(prepared.choice))
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# The v2 output parser


class _Stage(enum.Enum):
    RECIPIENT = "recipient"  # reading a recipient, up to <|content|>
    BODY = "body"  # a turn's body (text or arguments), up to <|from|>
    HEADER = "header"  # after <|from|>: skipping "assistant\n" up to <|recipient|>


_RECIPIENT_ENDS = (CONTENT, FROM)
_BODY_ENDS = (FROM,)
_HEADER_ENDS = (RECIPIENT,)


class V2Parser(BufferedParser):
    """Turns are split on ``<|from|>``; a recipient ends at ``<|content|>`` and is stripped; a body
    is stripped. Recipient ``all`` (or an empty one) is text; several text turns are joined with a
    newline. A recipient that never reaches ``<|content|>`` (output cut short) is a call with empty
    arguments. Anything between ``<|from|>`` and ``<|recipient|>`` (``assistant\\n``) is skipped."""

    __slots__ = ("_stage", "_buf", "_scan", "_is_text", "_segment", "_had_text", "_out")

    def __init__(self, choice: ToolChoice) -> None:
        super().__init__()
        self._had_text = False
        self._is_text = False
        if choice.kind == "none":
            self._open_body(text=True)
        elif choice.kind == "named":
            self._open_body(text=False)  # the prompt opened the call (announce_named_call names it)
        else:
            self._stage = _Stage.RECIPIENT

    # -- stages ------------------------------------------------------------------------------

    def _run(self, *, final: bool) -> None:
        while True:
            if self._stage is _Stage.RECIPIENT:
                i, marker = find_first(self._buf, _RECIPIENT_ENDS, self._scan)
                if i < 0:
                    if final:  # cut short: drop a marker's beginning, keep the name
                        cut = len(self._buf) - partial_marker_len(self._buf, _RECIPIENT_ENDS)
                        self._end_recipient(self._buf[:cut])
                        self._buf = ""
                    else:
                        self._scan = rescan_from(self._buf, _RECIPIENT_ENDS)
                    return
                name, self._buf = self._buf[:i].strip(), self._buf[i + len(marker):]
                if marker == CONTENT:
                    if name and name != "all":
                        self._out.append(ToolCallStart(name))
                    self._open_body(text=not name or name == "all")
                else:
                    self._end_recipient(name)
                    self._stage = _Stage.HEADER
            elif self._stage is _Stage.BODY:
                before, self._buf, found = take_until(self._buf, _BODY_ENDS, final=final)
                self._emit_body(before)
                if not found:
                    return
                self._stage = _Stage.HEADER
            else:
                _, self._buf, found = take_until(self._buf, _HEADER_ENDS, final=final)
                if not found:
                    return
                self._stage, self._scan = _Stage.RECIPIENT, 0

    def _end_recipient(self, name: str) -> None:
        name = name.strip()
        if name and name != "all":
            self._out.append(ToolCallStart(name))

    def _open_body(self, *, text: bool) -> None:
        self._stage = _Stage.BODY
        self._segment = StripSegment()
        self._is_text = text

    def _emit_body(self, raw: str) -> None:
        if not raw:
            return
        first = not self._segment.started
        chunk = self._segment.push(raw)
        if not chunk:
            return
        if self._is_text:
            if first and self._had_text:
                chunk = "\n" + chunk
            self._had_text = True
            self._out.append(TextDelta(chunk))
        else:
            self._out.append(ArgumentsDelta(chunk))
