"""JSON Schema -> the TypeScript-like namespace that MeetKai's jinja-era templates show the model.

This is the ``json_to_ts_schema`` macro set of the shipped v3.2 chat template (MeetKai/functionary
a8b0de1, byte-identical to ``meetkai/functionary-{small,medium}-v3.2``'s ``tokenizer_config.json``)
written as plain Python. The model was trained on that output, so its quirks are kept on purpose:

* defaults, enum members and bounds are printed the way Python's ``str()`` prints them
  (``Default=True.``, ``Default=['a', 'b'].``, ``True | None``);
* a bound of ``0`` alone does not open a comment line (the template tests truthiness), but it is
  printed once some other field opened one;
* only ``integer`` / ``float`` become ``number``; a list of types is joined with `` | `` as is;
* ``anyOf`` / ``allOf`` render as an empty type, ``oneOf`` joins the members' types;
* enum members are separated by `` | `` except after a member equal to the last one;
* ``examples`` show only where a comment line exists (always for objects and typed arrays);
* ``required`` is tested with Python's ``in`` (a string ``required`` matches substrings).

The pre-jinja Python writer of the v2 era (f44585c) differs in many details; it is not this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["schema_to_typescript", "function_to_typescript", "tools_to_namespace"]

_NONE = object()  # "no comment line" (the template's "<|NONE|>" sentinel)
_BOUNDS = (("maximum", "Maximum"), ("minimum", "Minimum"), ("maxLength", "Maximum length"), ("minLength", "Minimum length"))


def tools_to_namespace(tools: Iterable[Mapping[str, Any]], *, namespace: str = "functions") -> str:
    """The whole ``// Supported function definitions ... } // namespace functions`` block.

    ``tools`` holds OpenAI tools (``{"type": "function", "function": {...}}``), bare legacy
    functions (``{"name", "description", "parameters"}``) or ``{"type": "code_interpreter"}``
    entries (which have no name and are skipped)."""
    parts = [
        "// Supported function definitions that should be called when necessary.\n",
        f"namespace {namespace} {{\n\n",
    ]
    for tool in tools:
        fn = tool.get("function") or tool
        if isinstance(fn, Mapping) and fn.get("name"):
            parts.append(function_to_typescript(fn))
    parts.append(f"}} // namespace {namespace}")
    return "".join(parts)


def function_to_typescript(function: Mapping[str, Any]) -> str:
    """One ``// description\\ntype name = (_: {...}) => any;\\n\\n`` entry."""
    description = function.get("description")
    parameters = function.get("parameters")
    head = f"// {_text(description) if description is not None else ''}\ntype {_text(function.get('name'))}"
    if isinstance(parameters, Mapping) and parameters and parameters.get("properties"):
        body = schema_to_typescript(parameters.get("properties"), required=parameters.get("required", []))
        return f"{head} = (_: {{{body}\n}}) => any;\n\n"
    return f"{head} = () => any;\n\n"


def schema_to_typescript(properties: Any, *, required: Any = (), depth: int = 0) -> str:
    """The member lines for ``properties`` (each line starts with a newline, members indented by
    four spaces per ``depth``), as the template's ``get_parameter_typescript`` writes them."""
    out: list[str] = []
    _parameters(out, properties, required, depth)
    return "".join(out)


# ---------------------------------------------------------------------------------------------


def _parameters(out: list[str], properties: Any, required: Any, depth: int) -> None:
    if not isinstance(properties, Mapping):
        return
    offset = "    " * depth
    for name, param in properties.items():
        if not isinstance(param, Mapping):
            continue
        name = _text(name)
        comment = _param_info(param)
        examples: list[Any] = []
        if "examples" in param:
            examples = [f"Example {name}:", *_examples(param["examples"])]
        declaration = name
        if _is_iterable(required) and not _contains(required, name):
            declaration += "?"
        param_type = _param_type(param)

        if param_type == "object":
            _comment_lines(out, offset, comment, examples)
            out.append(f"\n{offset}{declaration}: {{")
            _parameters(out, _mapping_or_empty(param.get("properties", {})), param.get("required", []), depth + 1)
            out.append(f"\n{offset}}},")
        elif param_type == "array":
            items = _mapping_or_empty(param.get("items", {}))
            if not _contains(items, "type"):
                _declaration_with_info(out, offset, f"{declaration}: [],", comment, examples)
            else:
                _comment_lines(out, offset, comment, examples)
                array = _array(declaration, param, depth)
                out.append(array if array.endswith(",") else array + ",")
        else:
            if "enum" in param:
                param_type = _enum(param["enum"])
            if param.get("nullable"):
                param_type += " | null"
            _declaration_with_info(out, offset, f"{declaration}: {param_type},", comment, examples)


def _comment_lines(out: list[str], offset: str, comment: Any, examples: list[Any]) -> None:
    if comment is not _NONE:
        out.append(f"\n{offset}{comment}")
    for example in examples:
        out.append(f"\n{offset}// {_example(example)}")


def _declaration_with_info(out: list[str], offset: str, declaration: str, comment: Any, examples: list[Any]) -> None:
    # Scalars and untyped arrays show their examples only under an existing comment line.
    if comment is not _NONE:
        out.append(f"\n{offset}{comment}")
        for example in examples:
            out.append(f"\n{offset}// {_example(example)}")
    out.append(f"\n{offset}{declaration}")


def _array(name: str | None, schema: Mapping[str, Any], depth: int) -> str:
    offset = "    " * depth
    items = schema.get("items", {})
    if items is None or _length(items) == 0:
        return f"\n{offset}{name}: []" if name else f"\n{offset}[]"
    item_type = _param_type(items)
    if item_type == "object":
        head = f"\n{offset}{name}: {{" if name else f"\n{offset}{{"
        inner: list[str] = []
        if isinstance(items, Mapping):
            _parameters(inner, _mapping_or_empty(items.get("properties", {})), items.get("required", []), depth + 1)
        return f"{head}{''.join(inner)}\n{offset}}}[]"
    if item_type == "array":
        inner_array = _array(None, _mapping_or_empty(items), depth + 1)
        if not name:
            return f"\n{inner_array}[]"
        return f"\n{offset}{name}: {inner_array.strip()}[]"
    if _contains(items, "enum"):
        members = _enum(items["enum"])
        return f"({members})[]" if name is None else f"\n{offset}{name}: ({members})[]"
    return f"\n{item_type}[]" if name is None else f"\n{offset}{name}: {item_type}[],"


def _param_type(param: Any) -> str:
    if _contains(param, "type"):
        raw = param["type"]
        if _is_iterable(raw) and not isinstance(raw, str):
            raw = " | ".join(_text(t) for t in raw)
        return _convert_type(raw)
    if _contains(param, "oneOf"):
        types = [item["type"] for item in _as_list(param["oneOf"]) if isinstance(item, Mapping) and "type" in item]
        return _convert_type(" | ".join(_text(t) for t in _unique(types)))
    return ""


def _convert_type(param_type: Any) -> str:
    return "number" if param_type in ("integer", "float") else _text(param_type)


def _format(param: Mapping[str, Any]) -> Any:
    if "format" in param:
        return _text(param["format"])
    if "oneOf" in param:
        options = _as_list(param["oneOf"])
        last = options[-1].get("format", _NONE) if options and isinstance(options[-1], Mapping) else _NONE
        parts = []
        for item in options:
            if isinstance(item, Mapping) and "format" in item:
                fmt = item["format"]
                parts.append(_text(fmt) if fmt == last else f"{_text(fmt)} or ")
        return "".join(parts)
    return _NONE


def _param_info(param: Mapping[str, Any]) -> Any:
    raw_type = param.get("type", "any")
    fmt = _format(param)
    if not (
        "description" in param
        or "default" in param
        or fmt is not _NONE
        or any(_truthy(param.get(field)) for field, _ in _BOUNDS)
    ):
        return _NONE
    parts = ["//"]
    if "description" in param:
        description = _text(param["description"])
        if not description.endswith("."):
            description += "."
        parts.append(" " + description)
    if "default" in param:
        default = _text(param["default"])
        if raw_type == "string":
            default = f'"{default}"'
        parts.append(f" Default={default}.")
    if fmt is not _NONE:
        parts.append(f" Format={fmt}")
    for field, label in _BOUNDS:
        if field in param:
            parts.append(f" {label}={_text(param[field])}")
    return "".join(parts)


def _enum(options: Any) -> str:
    values = _as_list(options)
    if not values:
        return ""
    last = values[-1]
    parts = []
    for value in values:
        parts.append(f'"{value}"' if isinstance(value, str) else _text(value))
        if _differs(value, last):
            parts.append(" | ")
    return "".join(parts)


# --- Python / jinja value semantics --------------------------------------------------------


def _text(value: Any) -> str:
    """What jinja prints for a value: Python's ``str()``."""
    return value if isinstance(value, str) else str(value)


def _example(value: Any) -> str:
    return _text(value).replace("'", '"')


def _truthy(value: Any) -> bool:
    try:
        return bool(value)
    except Exception:  # noqa: BLE001 - an exotic value is simply "set"
        return True


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except Exception:  # noqa: BLE001
        return True


def _is_iterable(value: Any) -> bool:
    if value is None:
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _contains(container: Any, key: Any) -> bool:
    """Python's ``in`` as jinja applies it; False where Python would raise."""
    if isinstance(container, (Mapping, list, tuple, set, frozenset)):
        try:
            return key in container
        except TypeError:
            return False
    if isinstance(container, str):
        return isinstance(key, str) and key in container
    return False


def _length(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 0


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, Mapping)):
        return list(value)
    return [] if value is None else [value]


def _examples(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _mapping_or_empty(value: Any) -> Any:
    return {} if value is None else value


def _unique(values: list[Any]) -> list[Any]:
    """jinja's ``unique`` filter: first occurrence wins, strings compared case-insensitively."""
    seen: list[Any] = []
    out: list[Any] = []
    for value in values:
        key = value.lower() if isinstance(value, str) else value
        if any(_same(key, s) for s in seen):
            continue
        seen.append(key)
        out.append(value)
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False
