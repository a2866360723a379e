"""The function schema the v2-era models (``v2``, ``v2.llama3``) were served with.

Upstream wrote this TypeScript-like namespace in Python (``functionary/schema.py``) until its
jinja refactor; the v2.x models were served by that code (commit f44585c), so its quirks are the
prompt the models saw and are kept on purpose:

* a parameter's comment line joins description (a ``.`` appended), ``Default=``, ``Format=`` and the
  limits, and folds newlines into spaces; the function's own description is not folded;
* values are printed as Python prints them (``Default=True``, ``Default=['a', 'b']``, enum ``None``);
* a type that is neither ``type`` nor ``oneOf`` is ``any`` (``anyOf``, ``allOf``, bare ``enum``);
  ``oneOf`` types are listed once each in order of first appearance;
* ``nullable`` adds ``| null`` to scalar types only; a ``required`` that is not a list makes every
  parameter required;
* examples are printed only next to a comment (always for objects and typed arrays);
* an empty ``properties`` gives ``(_: {\\n\\n}) => any``, a missing one ``() => any``.

``$ref`` is already resolved by ``functionary.request`` (upstream resolved it here too).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["functions_namespace", "preamble_texts", "DEFAULT_SYSTEM", "CODE_INTERPRETER_SYSTEM"]

DEFAULT_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions. The assistant calls functions "
    "with appropriate input when necessary"
)
CODE_INTERPRETER_SYSTEM = (
    "When you send a message containing Python code to python, it will be executed in a stateful "
    "Jupyter notebook environment. python will respond with the output of the execution or time out "
    "after 60.0 seconds. The drive at '/mnt/data' can be used to save and persist user files."
)

_INDENT = "    "
_LIMITS = (
    ("maximum", "Maximum"),
    ("minimum", "Minimum"),
    ("maxLength", "Maximum length"),
    ("minLength", "Minimum length"),
)


def preamble_texts(tools: tuple[dict, ...] | list[dict]) -> tuple[str, str]:
    """The two system texts every v2-era prompt opens with: the function namespace, then either
    the code-interpreter note (when a ``code_interpreter`` tool is offered) or the default system
    message. Tools are request tools (``{"type", "function"}``) or bare legacy functions."""
    functions: list[dict] = []
    code_interpreter = False
    for tool in tools:
        if tool.get("function") is not None:
            functions.append(tool["function"])
        elif tool.get("type") == "code_interpreter":
            code_interpreter = True
        else:
            functions.append(tool)
    return functions_namespace(functions), (CODE_INTERPRETER_SYSTEM if code_interpreter else DEFAULT_SYSTEM)


def functions_namespace(functions: list[dict]) -> str:
    out = ["// Supported function definitions that should be called when necessary.\nnamespace functions {\n\n"]
    for fn in functions:
        name = fn.get("name")
        if name is None:
            continue
        out.append(f"// {fn.get('description', '')}\ntype {name}")
        params = fn.get("parameters")
        if isinstance(params, dict) and params.get("properties") is not None:
            lines = _properties(params["properties"], params.get("required", []), 0)
            out.append(" = (_: {\n" + "\n".join(lines) + "\n}) => any;\n\n")
        else:
            out.append(" = () => any;\n\n")
    out.append("} // namespace functions")
    return "".join(out)


# ---------------------------------------------------------------------------------------------


def _py(value: Any) -> str:
    """``str()`` of a JSON value, as upstream formatted it (Python spellings)."""
    return str(value)


def _convert(type_name: Any) -> Any:
    return "number" if isinstance(type_name, str) and type_name in ("integer", "float") else type_name


def _each(value: Any) -> Any:
    """What upstream's ``for x in value`` walked: a list's items, a string's characters."""
    return value if isinstance(value, (list, str, dict)) else [value]


def _type_of(param: dict) -> str:
    if "type" in param:
        raw = param["type"]
        joined = " | ".join(_py(t) for t in raw) if isinstance(raw, list) else raw
        return _convert(joined) if isinstance(joined, str) else _py(joined)
    if isinstance(param.get("oneOf"), list):
        kinds = [_py(_convert(item["type"])) for item in param["oneOf"] if isinstance(item, dict) and "type" in item]
        return " | ".join(dict.fromkeys(kinds))
    return "any"


def _format_of(param: dict) -> str | None:
    if "format" in param:
        return _py(param["format"])
    if isinstance(param.get("oneOf"), list):
        formats = [_py(item["format"]) for item in param["oneOf"] if isinstance(item, dict) and "format" in item]
        if formats:
            return " or ".join(formats)
    return None


def _comment(param: dict) -> str | None:
    info: list[str] = []
    if "description" in param:
        desc = _py(param["description"])
        info.append(desc if desc.endswith(".") else desc + ".")
    if "default" in param:
        default = _py(param["default"])
        if param.get("type", "any") == "string":
            default = f'"{default}"'
        info.append(f"Default={default}.")
    fmt = _format_of(param)
    if fmt is not None:
        info.append("Format=" + fmt)
    for key, label in _LIMITS:
        if key in param:
            info.append(f"{label}={_py(param[key])}")
    if not info:
        return None
    return ("// " + " ".join(info)).replace("\n", " ")


def _examples(name: str, examples: Any) -> list[str]:
    lines = [f"// Example {name}:"]
    for example in _each(examples):
        text = json.dumps(example) if isinstance(example, (dict, list)) else _py(example)
        lines.append(f"// {text}")
    return lines


def _enum(options: Any) -> str:
    return " | ".join(f'"{v}"' if isinstance(v, str) else _py(v) for v in _each(options))


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _properties(properties: Any, required: Any, depth: int) -> list[str]:
    lines: list[str] = []
    offset = _INDENT * depth
    for name, param in _as_dict(properties).items():
        if not isinstance(param, dict):
            continue  # e.g. a "required" list misplaced inside "properties"
        comment = _comment(param)
        examples = _examples(name, param["examples"]) if "examples" in param else []
        decl = name + ("?" if isinstance(required, list) and name not in required else "")
        kind = _type_of(param)
        if kind == "object":
            children = _properties(param.get("properties", {}), param.get("required", []), depth + 1)
            if comment is not None:
                lines.append(offset + comment)
            lines.extend(offset + e for e in examples)
            lines.append(f"{offset}{decl}: {{")
            lines.extend(children)
            lines.append(offset + "},")
        elif kind == "array" and "type" in _as_dict(param.get("items", {})):
            decl_line = _array(decl, param, depth)
            if not decl_line.endswith(","):
                decl_line += ","
            if comment is not None:
                lines.append(offset + comment)
            lines.extend(offset + e for e in examples)
            lines.append(decl_line)
        else:
            if kind == "array":  # items of unknown type
                decl += ": [],"
            else:
                if "enum" in param:
                    kind = _enum(param["enum"])
                if param.get("nullable") is True:
                    kind += " | null"
                decl += f": {kind},"
            if comment is not None:
                lines.append(offset + comment)
                lines.extend(offset + e for e in examples)
            lines.append(offset + decl)
    return lines


def _array(name: str | None, param: dict, depth: int) -> str:
    """An array's declaration (``name`` None: the bare type of a nested array)."""
    offset = _INDENT * depth
    items = _as_dict(param.get("items", {}))
    if not items:
        return "[]" if name is None else f"{offset}{name}: []"
    kind = _type_of(items)
    if kind == "object":
        head = "{" if name is None else f"{name}: {{"
        lines = [offset + head]
        lines.extend(_properties(items.get("properties", {}), items.get("required", []), depth + 1))
        lines.append(offset + "}[]")
        return "\n".join(lines)
    if kind == "array":
        inner = _array(None, items, depth + 1)
        return f"{inner}[]" if name is None else f"{offset}{name}: {inner.strip()}[]"
    if "enum" in items:
        options = _enum(items["enum"])
        return f"({options})[]" if name is None else f"{offset}{name}: ({options})[]"
    return f"{kind}[]" if name is None else f"{offset}{name}: {kind}[],"
