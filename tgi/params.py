"""OpenAI sampling parameters -> TGI ``GenerateParameters``, by TGI's own validation rules.

TGI rejects ``temperature: 0`` and ``top_p: 1`` (both common OpenAI values) and turns sampling on
whenever a sampler field is non-neutral, so greedy decoding is ``do_sample: false`` with no
sampler field at all. ``parameters`` is always sent (without it TGI samples by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from functionary.errors import ContextLengthExceededError, InvalidRequestError, UnsupportedRequestError
from functionary.openai_types import ChatCompletionRequest
from tgi.types import GenerateParameters


@dataclass(frozen=True, slots=True)
class Limits:
    max_total_tokens: int
    max_input_tokens: int
    max_stop_sequences: int = 4


def check_supported(request: ChatCompletionRequest) -> None:
    """Fields OpenAI defines that TGI cannot honour are refused, never silently dropped."""
    if request.presence_penalty:
        raise UnsupportedRequestError(
            "'presence_penalty' is not supported by TGI; use 'frequency_penalty' or send 0",
            param="presence_penalty",
        )
    if request.logit_bias:
        raise UnsupportedRequestError("'logit_bias' is not supported by TGI", param="logit_bias")
    if request.top_logprobs and not request.logprobs:
        raise InvalidRequestError("'top_logprobs' requires 'logprobs' to be true", param="top_logprobs")


def user_stops(request: ChatCompletionRequest) -> list[str]:
    stop = request.stop
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > 4:
        raise InvalidRequestError("'stop' supports up to 4 sequences", param="stop")
    if any(not s for s in stops):
        raise InvalidRequestError("'stop' sequences must not be empty", param="stop")
    return stops


def max_new_tokens(request: ChatCompletionRequest, *, prompt_tokens: int, limits: Limits) -> int:
    room = limits.max_total_tokens - prompt_tokens
    if prompt_tokens > limits.max_input_tokens or room < 1:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {limits.max_total_tokens} tokens "
            f"(at most {limits.max_input_tokens} in the prompt). However, your messages resulted in "
            f"{prompt_tokens} tokens. Please reduce the length of the messages.",
            param="messages",
        )
    asked = request.max_completion_tokens or request.max_tokens
    if asked is None:
        return room
    if asked > room:
        field = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        raise ContextLengthExceededError(
            f"This model's maximum context length is {limits.max_total_tokens} tokens. However, you "
            f"requested {prompt_tokens + asked} tokens ({prompt_tokens} in the messages, {asked} in "
            "the completion). Please reduce the length of the messages or completion.",
            param=field,
        )
    return asked


def generate_parameters(
    request: ChatCompletionRequest,
    *,
    new_tokens: int,
    stops: list[str],
    limits: Limits,
    seed: int | None = None,
) -> GenerateParameters:
    """The ``parameters`` object of a TGI generate request (only set keys: TGI rejects null for
    several fields). Its ``grammar`` is added by ``ChatService.plan`` (tgi/grammar.py)."""
    params: dict = {"max_new_tokens": new_tokens, "details": True}
    temperature = request.temperature
    top_p = request.top_p
    greedy = temperature == 0 or top_p == 0
    if greedy:
        params["do_sample"] = False
    else:
        params["do_sample"] = True
        if temperature is not None and temperature != 1:
            params["temperature"] = temperature
        if top_p is not None and top_p < 1:
            params["top_p"] = top_p
        if request.top_k is not None and request.top_k > 0:
            params["top_k"] = request.top_k
        chosen_seed = request.seed if request.seed is not None else seed
        if chosen_seed is not None:
            params["seed"] = chosen_seed % (2**64)
    if request.frequency_penalty:
        params["frequency_penalty"] = request.frequency_penalty
    if request.repetition_penalty is not None and request.repetition_penalty != 1:
        params["repetition_penalty"] = request.repetition_penalty
    if stops:
        if len(stops) > limits.max_stop_sequences:
            raise UnsupportedRequestError(
                f"this model needs {len(stops)} stop sequences with yours, but the TGI server allows "
                f"{limits.max_stop_sequences} (text-generation-launcher --max-stop-sequences)",
                param="stop",
            )
        params["stop"] = stops
    if request.logprobs and request.top_logprobs:
        params["top_n_tokens"] = request.top_logprobs
    return GenerateParameters(**params)
