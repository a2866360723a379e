"""A valid instance of a JSON schema (the demo reply under a json grammar)."""

from __future__ import annotations

import math

_FORMATS = {"date": "2024-01-01", "date-time": "2024-01-01T12:00:00Z", "time": "12:00:00",
            "email": "user@example.com", "uuid": "123e4567-e89b-12d3-a456-426614174000",
            "uri": "https://example.com/"}


def schema_instance(schema, root=None, name: str = "value", depth: int = 0):
    """A value valid under ``schema`` (local ``$ref``s, ``const``, ``enum``, ``anyOf``/``oneOf``/``allOf``,
    required properties, nested objects and arrays, string lengths and formats, number bounds); string
    ``pattern``s are not followed."""
    root = schema if root is None else root
    if depth > 12 or not isinstance(schema, dict):
        return demo_string(name)
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target = root
        for part in ref[1:].split("/"):
            if part and isinstance(target, dict):
                target = target.get(part.replace("~1", "/").replace("~0", "~"))
        return schema_instance(target, root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return schema_instance(options[0], root, name, depth + 1)
    if isinstance(schema.get("allOf"), list):
        return schema_instance(_merge_all_of(schema), root, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = [k for k in schema.get("required") or () if isinstance(k, str)]
        keys = [k for k in props if k in required] + [k for k in required if k not in props]
        return {key: schema_instance(props.get(key, {}), root, key, depth + 1) for key in keys}
    if kind == "array":
        if isinstance(schema.get("prefixItems"), list):
            return [schema_instance(item, root, name, depth + 1) for item in schema["prefixItems"]]
        low, high = schema.get("minItems") or 0, schema.get("maxItems")
        count = max(low, 1 if high is None or high >= 1 else 0)
        return [schema_instance(schema.get("items", {}), root, name, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number_instance(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    value = _FORMATS.get(schema.get("format")) or demo_string(name)
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        value += "x" * (low - len(value))
    if isinstance(high, int) and len(value) > high:
        value = value[:high]
    return value


def _merge_all_of(schema: dict) -> dict:
    merged = {key: value for key, value in schema.items() if key != "allOf"}
    for part in schema["allOf"]:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_instance(schema: dict, integer: bool):
    step = 1 if integer else 0.5
    value = 1
    if _is_number(schema.get("minimum")):
        value = schema["minimum"]
    elif _is_number(schema.get("exclusiveMinimum")):
        value = schema["exclusiveMinimum"] + step
    if _is_number(schema.get("maximum")) and value > schema["maximum"]:
        value = schema["maximum"]
    if _is_number(schema.get("exclusiveMaximum")) and value >= schema["exclusiveMaximum"]:
        value = schema["exclusiveMaximum"] - step
    multiple = schema.get("multipleOf")
    if _is_number(multiple) and multiple > 0:
        value = math.ceil(value / multiple) * multiple
    if integer:
        return int(math.ceil(value))
    return int(value) if float(value).is_integer() else value


def demo_string(name: str) -> str:
    lowered = name.lower()
    for needle, value in (("location", "San Francisco, CA"), ("city", "Paris"), ("email", "user@example.com"),
                          ("date", "2024-01-01"), ("time", "12:00"), ("query", "weather today")):
        if needle in lowered:
            return value
    return "example"
