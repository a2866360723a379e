"""Constants, runtime switches and TGI-like log lines shared by the emulator's modules."""

from __future__ import annotations

import datetime
import json
import sys

VERSION = "3.3.6-dev0"
DEFAULT_EOS_TOKENS = (
    "</s>", "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>", "<end_of_turn>",
    "<eos>", "<｜end▁of▁sentence｜>",
)
GENERATION_CHUNK = 1024  # 3.1.1+: the router generates in chunks of at most this many tokens
GENERATION_FAILURE = (
    "Request failed during generation: Server error: CUDA out of memory. Tried to allocate 2.00 GiB. "
    "GPU 0 has a total capacity of 79.10 GiB of which 1.06 GiB is free."
)
DESERIALIZE = "Failed to deserialize the JSON body into the target type: "
TEXT_PLAIN = "text/plain; charset=utf-8"
APPLICATION_JSON = "application/json"

# Runtime switches: name -> (kind, default). CLI flags use the same names with dashes.
FAULT_SWITCHES = {
    "demo": ("bool", False),
    "legacy_sse": ("bool", False),
    "overload": ("bool", False),
    "unhealthy": ("bool", False),
    "split_utf8": ("bool", False),
    "token_delay": ("float", 0.0),
    "prefill_delay": ("float", 0.0),
    "keep_alive": ("float", 15.0),
    "fail_after": ("count", None),
    "cut_after": ("count", None),
    "reset_after": ("count", None),
    "incomplete_after": ("count", None),
    "max_concurrent_requests": ("int", 128),
}
REPLY_FAULTS = ("fail_after", "incomplete_after", "cut_after", "reset_after")


# ------------------------------------------------------------------------------------------------ logging


class Log:
    """TGI-like log lines on stderr: the launcher's compact text format, or JSON with ``--json-output``."""

    def __init__(self, json_output: bool) -> None:
        self.json_output = json_output

    def __call__(self, message: str, *, level: str = "INFO", target: str = "text_generation_launcher",
                 span: str | None = None, **fields: object) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if self.json_output:
            record = {"timestamp": stamp, "level": level, "fields": {"message": message, **fields},
                      "target": target}
            if span:
                record["span"] = {"name": span}
            line = json.dumps(record, ensure_ascii=False)
        else:
            extra = "".join(f" {key}={value}" for key, value in fields.items())
            line = f"{stamp} {level:>5} {span + ': ' if span else ''}{target}: {message}{extra}"
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


ROUTER = "text_generation_router::server"


def compact(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def coerce_switch(name: str, value):
    kind = FAULT_SWITCHES[name][0]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    if kind in ("count", "int"):
        if int(value) != value:
            raise ValueError(f"{name} must be an integer")
        return int(value)
    return float(value)
