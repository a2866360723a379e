"""A minimal TGI stand-in that serves only ``/generate_stream`` (no ``/health``, no ``/info``): the
gateway still starts (limits from the model's config) and answers, and a final special EOS whose
text the template does not know never reaches the client."""

from __future__ import annotations

import json

from openai import OpenAI

from tests.support.gateway_proc import start_gateway
from tests.support.local_http import StreamOnlyHandler, serving


class _Stub(StreamOnlyHandler):
    received: list = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Stub.received.append(body)
        if self.path != "/generate_stream":
            return self.do_GET()
        tokens = [("Hello", False), (" there", False), ("<|unknown_eos|>", True)]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        for i, (text, special) in enumerate(tokens, 1):
            last = i == len(tokens)
            event = {"index": i, "token": {"id": i, "text": text, "logprob": -0.1, "special": special},
                     "generated_text": "Hello there" if last else None,
                     "details": {"finish_reason": "eos_token", "generated_tokens": 3, "seed": None} if last else None}
            self.wfile.write(b"data:" + json.dumps(event).encode() + b"\n\n")
        self.wfile.flush()
        self.close_connection = True


def test_gateway_over_a_minimal_tgi(model_dirs) -> None:
    with serving(_Stub) as url:
        args = ["--model", str(model_dirs("v3.llama3")), "--endpoint", url,
                "--prompt-template", "v3.llama3", "--no-launch", "--startup_timeout", "5"]
        with start_gateway(args) as gw:
            client = OpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)
            reply = client.chat.completions.create(model=str(model_dirs("v3.llama3")),
                                                   messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "Hello there"
            assert reply.choices[0].finish_reason == "stop"
            chunks = list(client.chat.completions.create(model=str(model_dirs("v3.llama3")), stream=True,
                                                         messages=[{"role": "user", "content": "hi"}]))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == "Hello there"
            # the context size came from the model's config.json (8192): max_new_tokens fits in it
            params = _Stub.received[-1]["parameters"]
            assert 0 < params["max_new_tokens"] < 8192
