"""Demo replies: what a Functionary model of each prompt family would write, optionally under a grammar."""

from __future__ import annotations

import json
import re

from .prompt_tools import json_call, json_tools, ts_call, ts_tools
from .replies import Reply, tokens_from_text
from .schema import schema_instance

DEMO_TEXT = "Hello! How can I help you today?"
R1_EOS = "<｜end▁of▁sentence｜>"
LLAMA3_GENERATION = "<|start_header_id|>assistant<|end_header_id|>\n\n"
V2_GENERATION = "<|from|>assistant\n<|recipient|>"
QWEN_GENERATIONS = ("<|im_start|>assistant\n", "<start_of_turn>model\n", "<｜Assistant｜>")
V2_LLAMA3_TOOL = "<|reserved_special_token_249|>"


def demo_reply(prompt: str, *, grammar: dict | None, eos_texts) -> Reply:
    """A plausible Functionary answer to ``prompt``; under a (validated) ``grammar`` an answer that fits it
    followed by the family's EOS, as a constrained generation ends."""
    text = demo_output(prompt)
    if grammar is not None:
        text = _constrained_output(grammar, text, _family_eos(prompt))
    return Reply(tokens_from_text(text, eos_texts), source="demo")


def demo_output(prompt: str) -> str:
    """The raw text, special tokens inline, that a Functionary model would write after ``prompt``."""
    done = _demo_after_call(prompt)
    if done is not None:
        return done
    if "<|recipient|>" in prompt:
        return _demo_v2(prompt)
    if "<|END_OF_USER|>" in prompt or "<|END_OF_SYSTEM|>" in prompt:
        return "\n" + DEMO_TEXT + "<|END_OF_ASSISTANT|></s>"
    eos = _family_eos(prompt)
    if "<tools>\n" in prompt:
        return _demo_qwen(prompt, eos)
    if "Use the function '" in prompt:
        return _demo_use_function(prompt, eos)
    if "<|start_header_id|>" in prompt:
        return _demo_llama3(prompt)
    return DEMO_TEXT + eos


def _demo_after_call(prompt: str) -> str | None:
    """The EOS when the prompt ends right after a complete call (a client continuing an assistant turn that
    already holds a call): a model done with its calls stops."""
    if prompt.endswith("</function>"):
        return "<|eom_id|>"
    if prompt.endswith("</tool_call>"):
        return _family_eos(prompt)
    tail = _tail_after(prompt, LLAMA3_GENERATION) if "<|start_header_id|>" in prompt else ""
    if tail.startswith(">>>"):  # v3.llama3: ">>>name\n{complete JSON}"
        name, _, body = tail.rsplit(">>>", 1)[1].partition("\n")
        if name not in ("", "all") and body.strip().startswith("{"):
            try:
                json.loads(body)
                return "<|eot_id|>"
            except ValueError:
                pass
    return None


# A grammar-constrained demo answer: a valid instance of a JSON schema, or for a regex the longest prefix of the
# natural answer that matches, else one of the regex's literal alternatives or a small JSON object.


def _constrained_output(grammar: dict, natural: str, eos: str) -> str:
    if grammar["type"] == "regex":
        found = _regex_output(grammar["value"], natural)
        return natural if found is None else found + eos  # a regex we cannot satisfy: not honoured
    schema = grammar["value"]
    if isinstance(schema, str):
        schema = json.loads(schema)
    return json.dumps(schema_instance(schema), ensure_ascii=False) + eos


def _regex_output(pattern: str, natural: str) -> str | None:
    try:
        compiled = re.compile(pattern)
    except re.error:
        return None
    body = natural[:512]
    for end in range(len(body), 0, -1):
        if compiled.fullmatch(body, 0, end):
            return body[:end]
    for candidate in (*_regex_literals(pattern), '{"answer": ' + json.dumps(DEMO_TEXT) + "}", "{}"):
        if compiled.fullmatch(candidate):
            return candidate
    return None


def _regex_literals(pattern: str) -> list:
    """The alternatives of ``(?:lit|lit...)`` with their escapes undone ([] for any other shape)."""
    if not (pattern.startswith("(?:") and pattern.endswith(")")):
        return []
    out, current, i, body = [], [], 0, pattern[3:-1]
    escapes = {"n": "\n", "t": "\t", "r": "\r"}
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            current.append(escapes.get(body[i + 1], body[i + 1]))
            i += 2
            continue
        if c == "|":
            out.append("".join(current))
            current = []
        elif c in "()[]*+?{}.^$":
            return []
        else:
            current.append(c)
        i += 1
    out.append("".join(current))
    return out


def _family_eos(prompt: str) -> str:
    for marker, eos in (("<｜Assistant｜>", R1_EOS), ("<|start_header_id|>", "<|eot_id|>"),
                        ("<|im_start|>", "<|im_end|>"), ("<start_of_turn>", "<end_of_turn>")):
        if marker in prompt:
            return eos
    return "</s>"


def _tail_after(prompt: str, *markers: str) -> str:
    best, size = -1, 0
    for marker in markers:
        index = prompt.rfind(marker)
        if index > best:
            best, size = index, len(marker)
    return prompt[best + size:] if best >= 0 else ""


def _demo_v2(prompt: str) -> str:
    tail = _tail_after(prompt, V2_GENERATION)
    tools = ts_tools(prompt)
    end = "<|stop|></s>"
    if tail == "" and tools:
        name, args = ts_call(tools)
        return f"{name}\n<|content|>{args}{end}"
    if tail == "":
        return f"all\n<|content|>{DEMO_TEXT}{end}"
    named = re.fullmatch(r"([\w.\-]+)\n<\|content\|>", tail)
    if named and named.group(1) != "all":
        return ts_call(tools, named.group(1))[1] + end
    return DEMO_TEXT + end


def _demo_llama3(prompt: str) -> str:
    tail = _tail_after(prompt, LLAMA3_GENERATION)
    tools = ts_tools(prompt)
    eot = "<|eot_id|>"
    if tail.startswith(">>>"):  # v3.llama3: the generation prompt ends with ">>>"
        rest = tail[3:]
        if rest == "":
            return "{0}\n{1}".format(*ts_call(tools)) + eot if tools else f"all\n{DEMO_TEXT}{eot}"
        named = re.fullmatch(r"([\w.\-]+)\n", rest)
        if named and named.group(1) != "all":
            return ts_call(tools, named.group(1))[1] + eot
        return DEMO_TEXT + eot
    if tail == "" and tools:
        return V2_LLAMA3_TOOL + "{0}\n{1}".format(*ts_call(tools)) + eot
    if tail == V2_LLAMA3_TOOL and tools:
        return "{0}\n{1}".format(*ts_call(tools)) + eot
    named = re.fullmatch(re.escape(V2_LLAMA3_TOOL) + r"([\w.\-]+)\n", tail)
    if named:
        return ts_call(tools, named.group(1))[1] + eot
    return DEMO_TEXT + eot


def _demo_qwen(prompt: str, eos: str) -> str:
    tools = json_tools(prompt)
    tail = _tail_after(prompt, *QWEN_GENERATIONS)
    if not tools:
        return DEMO_TEXT + eos
    named = re.fullmatch(r'<tool_call>\n\{"name": "([^"]+)", "arguments', tail)
    if named:
        return '": ' + json_call(tools, named.group(1))[1] + "}\n</tool_call>" + eos
    call = '{{"name": "{0}", "arguments": {1}}}\n</tool_call>'.format(*json_call(tools))
    if tail == "<tool_call>\n":
        return call + eos
    if tail.strip() == "":
        return "<tool_call>\n" + call + eos
    return DEMO_TEXT + eos


def _demo_use_function(prompt: str, eos: str) -> str:
    tools = json_tools(prompt)
    if not tools:
        return DEMO_TEXT + eos
    if "<function=" not in prompt:  # DeepSeek-R1's own tool-call markers
        name, args = json_call(tools)
        return ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>" + name + "\n```json\n" + args
                + "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>" + R1_EOS)
    tail = _tail_after(prompt, LLAMA3_GENERATION, "<｜Assistant｜>")
    if tail == "<function=":
        return "{0}>{1}</function><|eom_id|>".format(*json_call(tools))
    named = re.fullmatch(r"<function=([^>\n]+)>", tail)
    if named:
        return json_call(tools, named.group(1))[1] + "</function><|eom_id|>"
    if tail == "":
        return "<function={0}>{1}</function><|eom_id|>".format(*json_call(tools))
    return DEMO_TEXT + eos
