"""What the Qwen-style templates (qwen2.5-text-only, cogito, gemma3, r1_distilled_qwen) share:
the tool list inside ``<tools></tools>``, the calls of a history turn, the prefixes that enforce a
tool choice, and the parser. Each version only says how its turns look (STYLE 3)."""

from __future__ import annotations

import json
from typing import ClassVar

from functionary.templates._qwen_calls import CALL_CLOSE, CALL_OPEN, QwenCallParser
from functionary.templates.base import PreparedRequest, PromptTemplate, StreamParser
from functionary.turn_syntax import NAME, TurnSyntax

CODE_INTERPRETER_TOOL = {
    "type": "function",
    "function": {
        "name": "python",
        "description": (
            "This tool is used to execute python code. Code will be executed in a stateful Jupyter "
            "notebook environment. Python will respond with the output of the execution or time out "
            "after 60.0 seconds. The drive at '/mnt/data' can be used to save and persist user files."
        ),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The python code to run"}},
        },
    },
}

TOOLS_INTRO = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\n</tool_call>'
)


def tools_block(prepared: PreparedRequest) -> str:
    """``# Tools ... </tool_call>``: one JSON line per tool. Legacy ``functions`` are shown as the
    tools they are (upstream crashed on them with KeyError 'type')."""
    lines = []
    for tool in prepared.tools:
        if prepared.legacy_functions:
            tool = {"type": "function", "function": tool}
        elif tool.get("type") == "code_interpreter":
            tool = CODE_INTERPRETER_TOOL
        lines.append("\n" + json.dumps(tool, ensure_ascii=False))
    return TOOLS_INTRO + "".join(lines) + TOOLS_OUTRO


def history_calls(message: dict) -> list[str]:
    """``{"name": "...", "arguments": ...}`` for each call of an assistant turn, as the model
    writes it. A legacy ``function_call`` counts as one call."""
    calls = message["tool_calls"]
    if not calls:
        calls = [{"function": message["function_call"]}] if message["function_call"] else []
    out = []
    for call in calls:
        name = call["function"]["name"]
        arguments = call["function"]["arguments"] or ""
        if name == "python":
            arguments = _code_arguments(arguments)
        out.append('{"name": "' + name + '", "arguments": ' + arguments + "}")
    return out


def _code_arguments(arguments: str) -> str:
    # History keeps code-interpreter calls as plain code; the model writes {"code": "..."}.
    try:
        if isinstance(json.loads(arguments), dict):
            return arguments
    except ValueError:
        pass
    return json.dumps({"code": arguments}, ensure_ascii=False)


def content(message: dict) -> str:
    return message["content"] or ""


def is_tool_result(message: dict | None) -> bool:
    """A tool result (a legacy ``function`` result renders the same way)."""
    return message is not None and message["role"] in ("tool", "function")


class QwenFamilyTemplate(PromptTemplate):
    """Render = header + one piece per message + generation prompt + tool-choice prefix."""

    generation_prompt: ClassVar[str]

    def render(self, prepared: PreparedRequest) -> str:
        messages = prepared.messages
        parts = [self._header(prepared)]
        for i, message in enumerate(messages):
            prev = messages[i - 1] if i > 0 else None
            nxt = messages[i + 1] if i + 1 < len(messages) else None
            parts.append(self._turn(message, first=i == 0, prev=prev, next=nxt))
        parts.append(self.generation_prompt)
        parts.append(self.choice_prefix(prepared))
        return "".join(parts)

    def _header(self, prepared: PreparedRequest) -> str:
        raise NotImplementedError

    def _turn(self, message: dict, *, first: bool, prev: dict | None, next: dict | None) -> str:
        raise NotImplementedError

    @staticmethod
    def choice_prefix(prepared: PreparedRequest) -> str:
        choice = prepared.choice
        if choice.kind == "required":
            return CALL_OPEN + "\n"
        if choice.kind == "named":
            return CALL_OPEN + '\n{"name": "' + choice.name + '", "arguments'
        return ""

    def turn_syntax(self, prepared: PreparedRequest) -> TurnSyntax:
        # the code interpreter is an ordinary call here: {"name": "python", "arguments": {"code": "..."}}
        return TurnSyntax(
            tail=self.choice_prefix(prepared), text_avoid=(CALL_OPEN,),
            call_open=CALL_OPEN + '\n{"name": "' + NAME + '", "arguments": ', call_close="}\n" + CALL_CLOSE,
            call_sep="\\n?", args_avoid=(CALL_CLOSE,), end=self.end_tokens(),
        )

    def make_parser(self, prepared: PreparedRequest) -> StreamParser:
        return QwenCallParser(choice=prepared.choice, code_names=code_names(prepared))


def code_names(prepared: PreparedRequest) -> frozenset[str]:
    """``python`` is the code interpreter, unless the request defines its own ``python``
    function: then its arguments are ordinary JSON."""
    if prepared.legacy_functions:
        own = {t["name"] for t in prepared.tools}
    else:
        own = {t["function"]["name"] for t in prepared.tools if t.get("type") == "function"}
    return frozenset() if "python" in own else frozenset({"python"})
