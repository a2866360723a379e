"""The benchmark's requests and the emulator replies that answer them.

Two OpenAI requests (a typical tool-call request: 3 tools, 6 messages; a plain chat one) and, for the
``v3.llama3`` template (``meetkai/functionary-small-v3.2``, the README's model), the raw model output the
emulator streams back: about 60 tokens with one call, a short text, and a 1k-token text for the per-token
cost. The replies are queued on the emulator as a script (every entry identical, so the FIFO order between
concurrent requests does not matter).
"""

from __future__ import annotations

import copy
import json

TEMPLATE = "v3.llama3"
EOS = "<|eot_id|>"

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather and a short forecast for a place",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string", "description": "City and region, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "description": "forecast days, 1-7"},
            "include_hourly": {"type": "boolean"},
        }, "required": ["location"]}}},
    {"type": "function", "function": {
        "name": "search_flights",
        "description": "Search flights between two airports on a date",
        "parameters": {"type": "object", "properties": {
            "origin": {"type": "string", "description": "IATA code"},
            "destination": {"type": "string", "description": "IATA code"},
            "date": {"type": "string", "description": "YYYY-MM-DD"},
            "passengers": {"type": "integer"},
            "cabin": {"type": "string", "enum": ["economy", "premium", "business", "first"]},
        }, "required": ["origin", "destination", "date"]}}},
    {"type": "function", "function": {
        "name": "book_hotel",
        "description": "Book a hotel room",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"},
            "check_in": {"type": "string", "description": "YYYY-MM-DD"},
            "nights": {"type": "integer"},
            "guests": {"type": "integer"},
            "max_price": {"type": "number", "description": "per night, in USD"},
        }, "required": ["city", "check_in", "nights"]}}},
]

MESSAGES = [
    {"role": "system", "content": "You are a travel assistant. Be brief and use the tools when they help."},
    {"role": "user", "content": "I fly from SFO to JFK on 2025-03-14. Find me flights for two people."},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_flights1", "type": "function", "function": {
            "name": "search_flights",
            "arguments": '{"origin": "SFO", "destination": "JFK", "date": "2025-03-14", "passengers": 2}'}}]},
    {"role": "tool", "tool_call_id": "call_flights1",
     "content": '[{"flight": "UA 512", "departs": "08:05", "price": 289}, '
                '{"flight": "DL 1420", "departs": "13:40", "price": 312}]'},
    {"role": "assistant", "content": "UA 512 leaves at 08:05 for $289 and DL 1420 at 13:40 for $312."},
    {"role": "user", "content": "Take the morning one. What will the weather be like in New York that week?"},
]

# What a Functionary model writes after the ``>>>`` that ends the prompt: a short text, then one call.
TOOL_REPLY = (
    "all\nThe morning flight is a good choice. Let me check the forecast for New York for the days you "
    "will be there.>>>get_weather\n"
    '{"location": "New York, NY", "unit": "fahrenheit", "days": 5, "include_hourly": false}' + EOS
)

CHAT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "In two sentences: why do airlines overbook flights?"},
]
# A request without tools renders ``>>>all\n``: the model writes the text directly.
CHAT_REPLY = (
    "Airlines overbook because a predictable share of passengers do not show up, and an empty seat "
    "earns nothing. Selling a few extra tickets fills those seats, and the rare overflow is cheaper to "
    "compensate than flying empty." + EOS
)


SHORT_TOKENS = 50  # the short answer the 1k-token one is compared with (the per-token slope)


def long_reply(tokens: int) -> str:
    """A plain-chat answer of exactly ``tokens`` emulator tokens (one word each, the EOS last)."""
    pieces = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
    return "".join(" " + pieces[i % len(pieces)] for i in range(tokens - 1)) + EOS


def tool_request(*, stream: bool, model: str = "functionary", **extra) -> dict:
    body = {"model": model, "messages": copy.deepcopy(MESSAGES), "tools": copy.deepcopy(TOOLS),
            "temperature": 0, "stream": stream}
    body.update(extra)
    return body


def chat_request(*, stream: bool, model: str = "functionary", **extra) -> dict:
    body = {"model": model, "messages": copy.deepcopy(CHAT_MESSAGES), "temperature": 0, "stream": stream}
    body.update(extra)
    return body


def encode(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
