"""The tools a rendered prompt declares (TypeScript namespaces, Qwen ``<tools>`` lines, ``Use the function``
lines) and demo arguments for them."""

from __future__ import annotations

import html
import json
import re

from .schema import demo_string

_TS_TOOL_RE = re.compile(r"^type ([A-Za-z0-9_.\-]+) = (?:\(\) => any;|\(_: \{\n(.*?)^\}\) => any;)", re.M | re.S)
_TS_PROP_RE = re.compile(r"([A-Za-z0-9_$]+)(\?)?: (.*?),?$")
_USE_FUNCTION_RE = re.compile(r"Use the function '([^'\n]+)' to[^\n]*\n([^\n]*)")


def _schema_value(name: str, schema) -> object:
    if not isinstance(schema, dict):
        return demo_string(name)
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _schema_value(name, schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind in ("integer", "number"):
        minimum = schema.get("minimum", 1)
        return int(minimum) if kind == "integer" and isinstance(minimum, (int, float)) else minimum
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "null":
        return None
    return _schema_args(schema) if kind == "object" else demo_string(name)


def _schema_args(schema) -> dict:
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or not props:
        return {}
    names = [key for key in (schema.get("required") or []) if key in props] or list(props)[:1]
    return {key: _schema_value(key, props[key]) for key in names}


def _ts_value(name: str, kind: str) -> object:
    kind = kind.strip()
    if kind.endswith("[]"):
        return []
    first = kind.split(" | ")[0].strip()
    if first == "null" and " | " in kind:
        first = kind.split(" | ")[1].strip()
    if first.startswith('"') or re.fullmatch(r"-?\d+(?:\.\d+)?", first):
        try:
            return json.loads(first)
        except ValueError:
            return first.strip('"')
    if first == "string":
        return demo_string(name)
    return {"number": 1, "boolean": True, "null": None}.get(first, demo_string(name))


def _ts_args(body: str) -> dict:
    args: dict = {}
    first = None
    depth, pending = 0, None
    for line in body.split("\n"):
        text = line.strip()
        if not text or text.startswith("//"):
            continue
        if depth:
            depth += text.count("{") - text.count("}")
            if depth <= 0:
                depth = 0
                if pending:
                    args[pending] = [] if text.startswith("}[]") else {}
                pending = None
            continue
        match = _TS_PROP_RE.fullmatch(text)
        if not match:
            continue
        name, optional, kind = match.groups()
        if kind.endswith("{"):
            depth, pending = 1, (None if optional else name)
            continue
        if first is None:
            first = (name, kind)
        if not optional:
            args[name] = _ts_value(name, kind)
    if not args and first is not None:
        args[first[0]] = _ts_value(*first)
    return args


def ts_tools(prompt: str) -> list:
    return [(m.group(1), m.group(2) or "") for m in _TS_TOOL_RE.finditer(prompt)]


def ts_call(tools: list, name: str | None = None) -> tuple:
    """(name, JSON arguments) for the named tool, else the first one."""
    chosen = next((tool for tool in tools if tool[0] == name), None) if name else None
    chosen = chosen or (tools[0] if not name else (name, ""))
    return chosen[0], json.dumps(_ts_args(chosen[1]), ensure_ascii=False)


def json_tools(prompt: str) -> list:
    """[(name, parameters schema)] from Qwen-style ``<tools>`` lines or ``Use the function`` lines."""
    tools = []
    if "<tools>\n" in prompt:  # the instructions also say "within <tools></tools> XML tags"
        block = prompt[prompt.find("<tools>\n") + len("<tools>\n"):]
        block = block[:block.find("</tools>")] if "</tools>" in block else block
        for line in block.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                fn = obj.get("function", obj) if isinstance(obj.get("function", obj), dict) else obj
                if isinstance(fn.get("name"), str):
                    tools.append((fn["name"], fn.get("parameters")))
        return tools
    for match in _USE_FUNCTION_RE.finditer(prompt):
        try:
            params = json.loads(html.unescape(match.group(2))).get("parameters")
        except (ValueError, AttributeError):
            params = None
        tools.append((html.unescape(match.group(1)), params))
    return tools


def json_call(tools: list, name: str | None = None) -> tuple:
    chosen = next((tool for tool in tools if tool[0] == name), None) if name else tools[0]
    chosen = chosen or (name, None)
    return chosen[0], json.dumps(_schema_args(chosen[1]), ensure_ascii=False)
