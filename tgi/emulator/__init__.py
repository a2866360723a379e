"""An emulator of Hugging Face text-generation-inference (TGI 3.3.x router), for tests and benchmarks.

A package of small modules, standard library only (in the default mode), Python >= 3.9, relative imports and
nothing from the rest of this project: the Docker test image carries the folder alone and runs it as
``PYTHONPATH=/opt/tgi-emulator python3 -m emulator --model-id /data --port 80``; here ``python -m tgi.emulator``
runs it. Modules: ``common`` (constants, switches, logs), ``tokenizer`` (the stand-in tokenizer), ``replies``
(script entries), ``demo``/``prompt_tools``/``schema`` (demo answers), ``bodies`` (request bodies, errors),
``validation`` (TGI's checks), ``plan`` (stopping, faults), ``connection`` (HTTP/1.1), ``app``/``generation``/
``control`` (routes), ``cli`` (flags, start-up), ``model`` (model mode, see below).

The wire facts it follows are those of ``shared/reference/tgi-protocol.md``:

* routes: ``GET /health`` ``/`` ``/ping`` ``/info`` ``/metrics`` ``/v1/models``; ``POST /generate``
  ``/generate_stream`` ``/`` (compat: ``stream`` picks the mode, ``return_full_text`` defaults to true unless
  ``--pipeline-tag`` names something other than ``text-generation``) and ``/tokenize``.
* ``/generate_stream`` answers 200 at once and sends every error as ONE ``data: {"error","error_type"}`` event;
  ``/generate`` answers errors as JSON with TGI's status; body rejections are axum's text/plain 400/413/415/422.
* events are ``data: {compact json}\\n\\n`` (``data:{json}`` with ``--legacy-sse``), ``index`` from 1, explicit
  nulls before the last event, the EOS streamed last with its text and ``special: true``, ``generated_text``
  without special tokens, stop sequences untrimmed, ``length`` checked before EOS, ``:\\n\\n`` keep-alives.

Tokenizer (``/tokenize`` and every input length): a BOS token (``--bos-token``, default ``<|begin_of_text|>``;
``""`` for none) as TGI adds it, then each special-looking token (``<|...|>``, ``<｜...｜>``, ``<s>``, ``</s>``,
``<tool_call>``, ``<think>``, ``<start_of_turn>`` ...) as one token (``<tool_call>``/``<think>`` pairs are not
flagged special, as Qwen's tokenizer reports them), and the rest in word-like pieces: up to 10
letters with one optional leading space (and a leading ``_``), up to 3 digits, up to 3 punctuation characters,
a newline, a run of blanks. Ids are stable (well-known ids for common special tokens, a CRC otherwise).

Where replies come from: a FIFO script of replies (``--script FILE`` or ``POST /emulator/script``), each
generation popping one; when the script is empty (always with ``--demo``) a demo reply: a Functionary-style call
of the prompt's first tool in the format the prompt's special tokens show (v1, v2, v2.llama3, v3.llama3,
v3-llama3.1, Qwen-style ``<tools>``, DeepSeek-R1), or a short text when there is no tool; under a ``grammar``
the demo reply fits it (a valid instance of a json schema, a regex's literal alternative or the part of the
natural reply that matches) and ends with the family's EOS, and a prompt that ends right after a complete call
gets the EOS alone. Scripted replies are sent as written, grammar or not. A reply is
``{"tokens": [{"text", "special"?, "id"?, "logprob"?, "delay_s"?, "eos"?}], "finish_reason"?, "delay_s"?,
"prefill_delay_s"?, "fail_after"?, "cut_after"?, "reset_after"?, "incomplete_after"?, "split_utf8"?,
"error"?: {"error", "error_type"}}`` or ``{"text": "Hi!<|eot_id|>"}`` (tokenized as above). A token is an EOS
when ``eos`` says so, else when it is special and its text is an ``--eos-token``. Generation cuts a reply where
TGI would stop (``max_new_tokens``, an EOS, a stop sequence matched at the end of the output); a reply that runs
out first finishes with its ``finish_reason`` (default ``length``).

Stopping (``plan.py``), after every token and in this order as TGI does (tgi-protocol.md §14): ``max_new_tokens``
reached -> ``length``; an EOS -> ``eos_token``; each stop string as the regex ``re.escape(stop) + "$"`` searched
in the token texts so far (special tokens' text included, the last 200-300 characters kept) -> ``stop_sequence``.
So a stop inside a token, or one a later token runs past, never fires, and the stop text stays in the output. In
the default mode every special token named by ``--eos-token`` is an EOS (TGI's GPU path, which honours
generation_config's list); model mode stops, like TGI on CPU, at tokenizer_config's EOS alone unless its data file
lists more.

Model mode (``--model-dir DIR``, ``model.py``): DIR holds a Hugging Face ``tokenizer.json``
(+ ``tokenizer_config.json``) and ``emulator_model.json`` describing a deterministic greedy model as rules
``{"after", "write"}`` (after text ending with ``after`` it writes ``write``, token by token; nothing to write ->
EOS). The real tokenizer (the ``tokenizers`` package) gives ``/tokenize`` and input lengths; a request's
``grammar`` masks every step with an outlines-core index as TGI's server does (json schemas converted with
outlines-core's converter); a masked step falls back to the allowed token closest to acceptance, so guided
output fits and ends. Only this mode imports packages from outside the standard library, and only when it
starts. Scripted replies still come first; ``GET``/``POST /emulator/model`` read and replace the rules.

Control endpoints (``/emulator/...``): ``requests`` (GET ``{"requests": [{"seq", "route", "method", "headers",
"body", "received_at", "outcome", "input_length", "finish_reason", "generated_tokens"}]}``, DELETE), ``state``
(GET ``{"in_flight", "cancelled", "completed", "requests", "connections", "script_remaining", "faults"}``),
``faults`` (GET; POST a JSON object of switches named like the CLI flags, ``null`` = back to the CLI value;
DELETE = all back), ``script`` (GET; POST ``{"replies": [...]}`` appends; DELETE), ``reset`` (POST: empty script
and log, zero counters, CLI faults).

Runtime switches (also CLI flags): ``demo``, ``legacy_sse``, ``overload`` (every generation gets TGI's 429
overloaded), ``unhealthy`` (``/health`` 503), ``split_utf8`` (a ``""`` token before each token holding a
non-ASCII character, as ``decode_token`` does for a cut UTF-8 sequence), ``token_delay`` and ``prefill_delay``
(seconds), ``keep_alive`` (seconds of silence before a ``:`` comment, 15 like TGI; 0 = never),
``max_concurrent_requests``, and the faults ``fail_after`` (a ``generation`` error), ``incomplete_after`` (TGI's
``incomplete_generation_stream`` event), ``cut_after`` (the body ends with no final event) and ``reset_after``
(TCP reset), each firing after N token events (before the final one at the latest). CLI only:
``--startup-delay S`` (the port stays closed while loading lines are logged), ``--crash-on-start CODE``.
"""
