"""The regex of a whole assistant turn, for the requests that ask for a guarantee (docs/grammar.md).

OpenAI's promises (``tool_choice`` ``required`` or a named function, ``strict`` tools,
``response_format`` ``json_object`` / ``json_schema``, ``parallel_tool_calls: false``) are kept by one
TGI request whose ``grammar`` is a regex covering everything the model writes after the unchanged
prompt, up to its end token. :func:`turn_spec` says what a request asks for (:class:`TurnSpec`, or
``None``: nothing, one unconstrained request); :func:`turn_regex` spells it in a template's syntax
(:class:`functionary.turn_syntax.TurnSyntax`). JSON schemas become regexes with outlines-core, the
conversion TGI's router runs on its own ``json`` grammars, with TGI's whitespace (``[ ]?``), so the
model's usual ``{"city": "Lima"}`` fits as written.

Pure computation: no I/O, no state; the same request always gives the same regex, and the regex
depends only on the tools and options, never on the messages (TGI caches its index per regex).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from outlines_core.json_schema import build_regex_from_schema

from functionary.errors import InvalidRequestError, UnsupportedRequestError
from functionary.openai_types import ChatCompletionRequest, CodeInterpreterTool, ResponseFormat
from functionary.templates.base import PreparedRequest, PromptTemplate
from functionary.turn_syntax import NAME, TurnSyntax

__all__ = [
    "FREE", "CallRule", "TurnSpec", "avoid_regex", "escape", "response_regex", "response_schema", "schema_regex",
    "turn_regex", "turn_spec", "whole_turn_regex",
]

FREE = "free"  # TurnSpec.content: plain text, whatever the model writes


@dataclass(frozen=True, slots=True)
class CallRule:
    """A callable tool: its name and the regex of its JSON arguments (``None``: free, nothing was asked of
    them but to be a call: any text up to the call's end); ``code``: the code interpreter (a family with a
    code syntax writes code instead of ``arguments``)."""

    name: str
    arguments: str | None
    code: bool = False


@dataclass(frozen=True, slots=True)
class TurnSpec:
    """What an answer may be: ``calls`` (in tool order), ``content`` (``None``: no text; :data:`FREE`;
    or the regex of a JSON answer), ``required`` (at least one call) and ``parallel`` (more than one)."""

    calls: tuple[CallRule, ...]
    content: str | None
    required: bool
    parallel: bool


# -- regex pieces ---------------------------------------------------------------------------------

_META = frozenset("\\.^$|?*+()[]{}")
_CLASS_META = frozenset("\\]-[^&~")


def escape(text: str) -> str:
    """``text`` as a regex literal for both Python's ``re`` and outlines-core (Rust regex syntax, where
    escaping a non-meta character is an error)."""
    out = []
    for c in text:
        if c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        else:
            out.append("\\" + c if c in _META else c)
    return "".join(out)


def _class(chars: str) -> str:
    return "".join("\\" + c if c in _CLASS_META else escape(c) for c in dict.fromkeys(chars))


def _alt(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "(?:" + "|".join(items) + ")"


def avoid_regex(words: tuple[str, ...], *, nonempty: bool = False) -> str:
    """Any text that contains none of ``words`` and does not end with the beginning of one (so that an opener
    the model writes after the text is never read as the text's end: see docs/grammar.md, "outlines-core's
    index"). Either one word of a repeated character (``>>>``) or words that share a first character occurring
    nowhere else in them (``<function=``, ``<|python_tag|>``)."""
    repeat = "+" if nonempty else "*"
    if len(words) == 1 and len(set(words[0])) == 1:
        word = words[0]
        c, n = escape(word[0]), len(word)
        items = [f"{c * k}[^{_class(word[0])}]" for k in range(n)]
        return f"(?:{'|'.join(items)}){repeat}"
    first = words[0][0]
    if any(not w or w[0] != first or first in w[1:] for w in words):
        raise ValueError(f"cannot build a text regex avoiding {words!r}")
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word[1:]:
            node = node.setdefault(ch, {})
        node[None] = True  # a whole word ends here: never reached
    c = escape(first)
    stay = _stay(trie)
    stop = c + (f"(?:{stay})?" if stay else "")  # ends inside a word's beginning; a new one follows
    leave = c + _leave(trie, first)  # a word's beginning, then a character that breaks it
    return f"(?:[^{_class(first)}]|(?:{stop})*{leave}){repeat}"


def _stay(node: dict) -> str:
    items = []
    for ch, sub in node.items():
        if ch is None or None in sub:
            continue
        deeper = _stay(sub)
        items.append(escape(ch) + (f"(?:{deeper})?" if deeper else ""))
    return "|".join(items)


def _leave(node: dict, first: str) -> str:
    children = "".join(ch for ch in node if ch is not None)
    items = [f"[^{_class(first + children)}]"]
    for ch, sub in node.items():
        if ch is not None and None not in sub:
            items.append(escape(ch) + _leave(sub, first))
    return _alt(items)


# -- JSON schemas ---------------------------------------------------------------------------------

# outlines-core's strings take the short escapes only; a model that writes \u00e9 writes valid JSON too
_SHORT_ESCAPES = '\\\\["\\\\/bfnrt]'
_ALL_ESCAPES = '\\\\(?:["\\\\/bfnrt]|u[0-9a-fA-F]{4})'


# ``format`` is an annotation in JSON Schema 2020-12: the values outlines-core cannot check are dropped
_FORMATS = frozenset({"date-time", "date", "time", "uuid", "email", "uri"})
_SUBSCHEMA = ("items", "additionalProperties", "not", "contains", "if", "then", "else", "propertyNames")
_SUBSCHEMAS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")


def _checkable(schema: Any) -> Any:
    """``schema`` without the ``format`` annotations outlines-core would refuse (a copy; keywords only, never
    a property that happens to be called ``format``)."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "format" and isinstance(value, str) and value not in _FORMATS:
            continue
        if key in _SUBSCHEMA:
            value = _checkable(value)
        elif key in _SUBSCHEMAS and isinstance(value, list):
            value = [_checkable(v) for v in value]
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {k: _checkable(v) for k, v in value.items()}
        out[key] = value
    return out


def schema_regex(schema: Any, *, param: str) -> str:
    """The regex of a JSON Schema, as TGI's router would build it; a schema outlines-core cannot turn
    into a regex is a 400 naming ``param``."""
    try:
        regex = build_regex_from_schema(json.dumps(_checkable(schema)))
    except (ValueError, TypeError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidRequestError(
            f"'{param}' cannot be enforced as a grammar: {reason}", param=param, code="unsupported_schema"
        ) from None
    return regex.replace(_SHORT_ESCAPES, _ALL_ESCAPES)


NO_ARGUMENTS = r"\{[ ]?\}"
# Any object, nested as outlines-core allows: its DFA is costly to build (seconds), but it is one constant regex,
# so TGI builds it once and caches it; only json_object answers use it (free arguments are cheaper, see CallRule).
ANY_OBJECT = schema_regex({"type": "object"}, param="")


def _arguments_regex(parameters: Any, *, param: str) -> str:
    if parameters is None:
        return NO_ARGUMENTS
    return schema_regex(parameters, param=param)


def response_regex(fmt: ResponseFormat | None) -> str | None:
    """The regex of the answer for ``response_format``; ``None`` for text. Malformed formats are a 400."""
    schema = response_schema(fmt)
    if schema is None:
        return None
    if schema is True:
        return ANY_OBJECT
    return schema_regex(schema, param="response_format.json_schema.schema")


def response_schema(fmt: ResponseFormat | None) -> dict | bool | None:
    """The schema ``response_format`` asks for (``True``: any object; ``None``: text); a malformed one is a 400
    (checked whether or not grammars are used)."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return True
    spec = fmt.json_schema
    if not isinstance(spec, dict):
        raise InvalidRequestError(
            "Missing required parameter: 'response_format.json_schema'.", param="response_format.json_schema"
        )
    schema = spec.get("schema")
    if schema is None:
        return True
    if not isinstance(schema, dict):
        raise InvalidRequestError(
            "'response_format.json_schema.schema' must be a JSON Schema object", param="response_format.json_schema"
        )
    return schema


# -- what a request asks for ----------------------------------------------------------------------


def _tool_params(request: ChatCompletionRequest) -> tuple[dict[str, str], set[str]]:
    """name -> the request field of its parameters (for 400s), and the names marked ``strict``."""
    paths: dict[str, str] = {}
    strict: set[str] = set()
    for i, tool in enumerate(request.tools or ()):
        if not isinstance(tool, CodeInterpreterTool):
            paths.setdefault(tool.function.name, f"tools[{i}].function.parameters")
            if tool.function.strict:
                strict.add(tool.function.name)
    for i, fn in enumerate(request.functions or ()):
        paths.setdefault(fn.name, f"functions[{i}].parameters")
        if fn.strict:
            strict.add(fn.name)
    choice = request.tool_choice
    if not isinstance(choice, str) and choice is not None and (
        choice.function.description or choice.function.parameters is not None
    ):
        paths[choice.function.name] = "tool_choice.function.parameters"  # its own definition replaced the tools
    return paths, strict


def turn_spec(request: ChatCompletionRequest, prepared: PreparedRequest, *, every: bool = False) -> TurnSpec | None:
    """What ``request`` asks to be guaranteed, or ``None`` when nothing is. ``every`` (``--grammar on``)
    treats every request with tools as asking: all tools' arguments fit their schemas."""
    answer = response_regex(request.response_format)
    kind = prepared.choice.kind
    calling = bool(prepared.tools) and kind != "none"
    paths, strict = _tool_params(request)
    forced = kind in ("required", "named")
    one_call = request.parallel_tool_calls is False
    asks = answer is not None or forced or (calling and (every or one_call or bool(strict)))
    if not asks:
        return None
    calls = []
    for tool in prepared.tools if calling else ():
        fn = tool if prepared.legacy_functions else tool.get("function")
        if fn is None:  # the code interpreter
            from functionary.templates._qwen_prompt import CODE_INTERPRETER_TOOL

            code = CODE_INTERPRETER_TOOL["function"]["parameters"]
            calls.append(CallRule("python", schema_regex(code, param="tools"), code=True))
            continue
        name = fn["name"]
        if forced or every or name in strict:
            arguments = _arguments_regex(fn.get("parameters"), param=paths.get(name, "tools"))
        else:
            arguments = None  # the request asked nothing of these arguments but to be a call
        calls.append(CallRule(name, arguments))
    content = None if forced else (answer if answer is not None else FREE)
    return TurnSpec(calls=tuple(calls), content=content, required=forced, parallel=not one_call)


def whole_turn_regex(
    template: PromptTemplate, request: ChatCompletionRequest, prepared: PreparedRequest, *, every: bool = False
) -> str | None:
    """The regex of the whole assistant turn for ``request``, or ``None`` when nothing is guaranteed.
    A template whose syntax cannot be constrained refuses a request that asks for a guarantee."""
    spec = turn_spec(request, prepared, every=every)
    if spec is None:
        return None
    syntax = template.turn_syntax(prepared)
    if syntax is None:
        raise UnsupportedRequestError(
            f"prompt template {template.version} cannot guarantee tool_choice, strict tools, response_format or "
            "parallel_tool_calls: its output cannot be described by a grammar", code="grammar_unsupported",
        )
    return turn_regex(syntax, spec)


# -- the turn in a template's syntax --------------------------------------------------------------

Parts = list[tuple[bool, str]]  # (literal?, text or regex)


def turn_regex(syntax: TurnSyntax, spec: TurnSpec) -> str:
    """Alternatives (calls, text then calls, text), each from the prompt's end to its end token, with the part
    the prompt already wrote (``syntax.tail``) cut off.

    Two rules keep outlines-core's index (what TGI masks with) from refusing tokens of an answer that fits:
    its DFA is leftmost-first, so an alternative that can match early (text) comes after the others; and a token
    is refused when the answer was already complete one byte before the token's end, so complete answers occur
    only at the true end: a text answer is never empty nor ends with the beginning of a call opener, and where
    a family ends its turn with a token that is not the EOS (``text_end`` / ``calls_end``) that token is required.
    """
    code_parts, calls = _code_rules(syntax, spec)
    groups = _grouped(syntax, calls)
    rest = _more_calls(syntax, spec, groups, code_parts)
    firsts: list[Parts] = []
    for names, args in groups:
        before, after = syntax.call_open.split(NAME)
        name: tuple[bool, str] = (True, names[0]) if len(names) == 1 else (False, _alt([escape(n) for n in names]))
        firsts.append([(True, before), name, (True, after), (False, args), (True, syntax.call_close)])
    if code_parts:
        firsts.append(code_parts)
    head: Parts = [(True, syntax.turn_open)]
    calls_end: Parts = [(False, rest), (False, _end(syntax.calls_end, syntax))]
    alternatives: list[Parts] = [head + [(True, syntax.calls_open)] + f + calls_end for f in firsts]
    if spec.content == FREE:
        text: Parts = head + [(True, syntax.text_open), (False, avoid_regex(syntax.text_avoid))]
        alternatives += [text + [(True, syntax.text_sep + syntax.calls_open)] + f + calls_end for f in firsts]
    if spec.content is not None and not spec.required:
        body = avoid_regex(syntax.text_avoid, nonempty=True) if spec.content == FREE else spec.content
        alternatives.append(head + [(True, syntax.text_open), (False, body), (False, _end(syntax.text_end, syntax))])
    kept = [k for k in (_strip(parts, syntax.tail) for parts in alternatives) if k is not None]
    if not kept:
        raise UnsupportedRequestError("the prompt's tool-choice prefix leaves no answer the request allows")
    return _alt(list(dict.fromkeys(kept)))


def _more_calls(syntax: TurnSyntax, spec: TurnSpec, groups: list[tuple[list[str], str]], code_parts) -> str:
    """What may follow the first call: more calls where parallel calls are allowed, then the calls' closing."""
    code = "".join(escape(t) if lit else t for lit, t in code_parts) if code_parts else None
    alternatives = [_call(syntax, names, args) for names, args in groups]
    single = _alt(alternatives + ([code] if code and not _last(syntax) else []))
    parallel = spec.parallel and syntax.max_calls != 1
    more = f"(?:{syntax.call_sep}{single})*" if parallel and groups else ""
    tail_code = f"(?:{syntax.call_sep}{code})?" if code and _last(syntax) and parallel and groups else ""
    return more + tail_code + escape(syntax.calls_close)


def _end(mandatory: tuple[str, ...], syntax: TurnSyntax) -> str:
    """A newline the model may put before the end (parsers strip it), then the end token: ``mandatory`` when the
    family writes one that is never the tokenizer's EOS, else optional (in a final state TGI allows the EOS)."""
    if mandatory:
        return r"\n?" + _alt([escape(e) for e in mandatory])
    return r"\n?" + (f"(?:{_alt([escape(e) for e in syntax.end])})?" if syntax.end else "")


def _last(syntax: TurnSyntax) -> bool:
    return syntax.code_body == "rest"


def _code_rules(syntax: TurnSyntax, spec: TurnSpec) -> tuple[Parts | None, list[CallRule]]:
    """The code interpreter's call in this syntax (``None`` when not callable), and the JSON calls."""
    code = next((r for r in spec.calls if r.code), None)
    calls = [r for r in spec.calls if not r.code or syntax.code_open is None]
    if code is None or syntax.code_open is None:
        return None, calls
    body = r"[\s\S]*" if _last(syntax) else avoid_regex(syntax.code_body)
    return [(True, syntax.code_open), (False, body), (True, syntax.code_close)], calls


def _grouped(syntax: TurnSyntax, calls: list[CallRule]) -> list[tuple[list[str], str]]:
    """Tools with the same arguments regex share one alternative (the index stays small)."""
    groups: dict[str, list[str]] = {}
    for rule in calls:
        arguments = rule.arguments
        if arguments is None:
            arguments = avoid_regex(syntax.args_avoid) if syntax.args_avoid else r"[\s\S]*"
        names = groups.setdefault(arguments, [])
        if rule.name not in names:
            names.append(rule.name)
    return [(names, args) for args, names in groups.items()]


def _call(syntax: TurnSyntax, names: list[str], arguments: str) -> str:
    before, after = syntax.call_open.split(NAME)
    return escape(before) + _alt([escape(n) for n in names]) + escape(after) + arguments + escape(syntax.call_close)


def _strip(parts: Parts, tail: str) -> str | None:
    """The regex of ``parts`` after the literal ``tail`` (None when ``parts`` cannot start with it)."""
    merged: Parts = []
    for literal, text in parts:
        if literal and merged and merged[-1][0]:
            merged[-1] = (True, merged[-1][1] + text)
        elif text or not literal:
            merged.append((literal, text))
    if tail:
        if not merged or not merged[0][0] or not merged[0][1].startswith(tail):
            return None
        merged[0] = (True, merged[0][1][len(tail):])
    return "".join(escape(text) if literal else text for literal, text in merged)
