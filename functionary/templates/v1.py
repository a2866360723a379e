"""Prompt template v1 (functionary v1): ``role:\\n{content}<|END_OF_ROLE|>`` turns, one call per
assistant turn as ``<|START_OF_FUNCTION_CALL|>{name}:\\n{arguments}<|END_OF_FUNCTION_CALL|>``.

v1 is not in upstream's registry; its prompts come from its own chat template (e240e8c), which
never renders the tools. That template is jinja without ``trim_blocks``, so every message brings
blank lines of its own; reproduced exactly:

    \\n\\n{role}:\\n{content}<|END_OF_USER|>\\n\\n              (user; system likewise)
    \\n\\nfunction name={name}:\\n{content}<|END_OF_FUNCTION_RESULT|>\\n\\n
    \\n\\n\\nassistant:\\n{content}<|END_OF_ASSISTANT|>\\n\\n\\n       (text)
    \\n\\n\\n\\nassistant:\\n[{content}\\n]<|START_OF_FUNCTION_CALL|>{name}:\\n{arguments}
        <|END_OF_FUNCTION_CALL|>\\n\\n\\n\\n                          (a function_call)
    \\n\\n                                                       (any other role: nothing)
    \\nassistant:                                              (generation prompt)

``tool_calls`` are not part of the format (only the legacy ``function_call``), and upstream
crashed on any null content it had to print: such requests are refused here.
"""

from __future__ import annotations

import enum

from functionary.errors import InvalidRequestError, UnsupportedRequestError
from functionary.templates.base import (
    BufferedParser, PreparedRequest, PromptTemplate, StreamParser, StripSegment, ToolCallStart,
)
from functionary.templates._markers import take_until
from functionary.turn_syntax import NAME, TurnSyntax

START_CALL = "<|START_OF_FUNCTION_CALL|>"
END_SYSTEM = "<|END_OF_SYSTEM|>"
END_USER = "<|END_OF_USER|>"
END_ASSISTANT = "<|END_OF_ASSISTANT|>"
END_RESULT = "<|END_OF_FUNCTION_RESULT|>"
END_CALL = "<|END_OF_FUNCTION_CALL|>"


class V1Template(PromptTemplate):
    version = "v1"
    stop_tokens = (END_ASSISTANT, END_CALL)
    eos_tokens = ("</s>",)
    special_tokens = (START_CALL, END_SYSTEM, END_USER, END_ASSISTANT, END_RESULT, END_CALL, "</s>")

    def check(self, prepared: PreparedRequest) -> None:
        if prepared.choice.is_named:
            raise UnsupportedRequestError(
                "prompt template v1 cannot force a specific function (the format has no way to steer "
                "the model to one); let the model choose with 'auto'",
                param="function_call" if prepared.legacy_functions else "tool_choice",
            )
        for i, message in enumerate(prepared.messages):
            _check_message(message, i)

    def render(self, prepared: PreparedRequest) -> str:
        self.check(prepared)  # render never prints a null as text
        return "".join(_message(m) for m in prepared.messages) + "\nassistant:"

    def make_parser(self, prepared: PreparedRequest) -> StreamParser:
        return V1Parser()

    def turn_syntax(self, prepared: PreparedRequest) -> TurnSyntax:
        # one call per turn, after optional text; its arguments run to the end (END_OF_FUNCTION_CALL)
        return TurnSyntax(
            tail="", turn_open="\n", text_avoid=(START_CALL,), call_open=f"{START_CALL}{NAME}:\n",
            code_open=f"{START_CALL}python:\n", code_body="rest", max_calls=1, text_end=(END_ASSISTANT,),
            calls_end=(END_CALL,), end=self.end_tokens(),
        )


def _check_message(message: dict, i: int) -> None:
    role, content = message["role"], message["content"]
    if role not in ("system", "user", "function", "assistant"):
        return  # not rendered at all (tool results included, as upstream)
    if role == "function" and message["name"] is None:
        raise InvalidRequestError(
            f"prompt template v1 needs the function name of every function message: set 'name' on messages[{i}]",
            param=f"messages[{i}].name",
        )
    if content is None and not (role == "assistant" and message["function_call"] is not None):
        hint = " (v1 has no tool_calls; send the call as 'function_call')" if message["tool_calls"] else ""
        raise InvalidRequestError(
            f"prompt template v1 cannot render messages[{i}] ({role}) without content{hint}",
            param=f"messages[{i}].content",
        )


def _message(message: dict) -> str:
    role, content = message["role"], message["content"]
    if role == "user":
        return f"\n\nuser:\n{content}{END_USER}\n\n"
    if role == "system":
        return f"\n\nsystem:\n{content}{END_SYSTEM}\n\n"
    if role == "function":
        return f"\n\nfunction name={message['name']}:\n{content}{END_RESULT}\n\n"
    if role != "assistant":
        return "\n\n"
    call = message["function_call"]
    if call is None:
        return f"\n\n\nassistant:\n{content}{END_ASSISTANT}\n\n\n"
    text = "" if content is None else f"{content}\n"
    return f"\n\n\n\nassistant:\n{text}{START_CALL}{call['name']}:\n{call['arguments']}{END_CALL}\n\n\n\n"


# ---------------------------------------------------------------------------------------------


class _Stage(enum.Enum):
    TEXT = "text"  # text before the call marker
    NAME = "name"  # after the marker: a function name up to ":"
    ARGS = "args"  # the rest of the output


_MARKERS = (START_CALL,)


class V1Parser(BufferedParser):
    """Text (stripped) up to ``<|START_OF_FUNCTION_CALL|>``; then one call: the name up to the
    first ``:`` (stripped) and everything after it as arguments (stripped). Text before the call is
    kept as content. A name that never reaches its ``:`` (output cut short) is a call with empty
    arguments."""

    __slots__ = ("_stage", "_buf", "_scan", "_segment", "_out")

    def __init__(self) -> None:
        super().__init__()
        self._stage = _Stage.TEXT

    def _run(self, *, final: bool) -> None:
        if self._stage is _Stage.TEXT:
            before, self._buf, found = take_until(self._buf, _MARKERS, final=final)
            self._emit(before, text=True)
            if not found:
                return
            self._stage = _Stage.NAME
        if self._stage is _Stage.NAME:
            i = self._buf.find(":", self._scan)
            if i < 0:
                self._scan = len(self._buf)
                if final:
                    name = self._buf.strip()
                    if name:
                        self._out.append(ToolCallStart(name))
                    self._buf = ""
                return
            self._out.append(ToolCallStart(self._buf[:i].strip()))
            self._buf = self._buf[i + 1:]
            self._stage, self._segment = _Stage.ARGS, StripSegment()
        self._emit(self._buf, text=False)
        self._buf = ""
