"""OpenAI sampling parameters -> TGI ``GenerateParameters``, by TGI's own validation rules.

TGI rejects ``temperature: 0`` and ``top_p: 1`` (both common OpenAI values) and turns sampling on
whenever a sampler field is non-neutral, so greedy decoding is ``do_sample: false`` with no
sampler field at all. ``parameters`` is always sent (without it TGI samples by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from functionary.errors import ContextLengthExceededError, InvalidRequestError, UnsupportedRequestError
from functionary.openai_types import ChatCompletionRequest
from tgi.protocol.types import GenerateParameters


@dataclass(frozen=True, slots=True)
class Limits:
    max_total_tokens: int
    max_input_tokens: int
    max_stop_sequences: int = 4
    # TGI's --max-top-n-tokens (default 5); /info does not report it, so the gateway's flag of the same name says it
    max_top_n_tokens: int = 5


def check_supported(request: ChatCompletionRequest, limits: Limits | None = None) -> None:
    """Fields OpenAI defines that TGI cannot honour are refused, never silently dropped; and what OpenAI
    refuses that the templates would render (an empty ``messages``)."""
    if not request.messages:
        raise InvalidRequestError("[] is too short - 'messages'", param="messages", code="empty_array")
    if request.presence_penalty:
        raise UnsupportedRequestError(
            "'presence_penalty' is not supported by TGI; use 'frequency_penalty' or send 0",
            param="presence_penalty",
        )
    if request.logit_bias:
        raise UnsupportedRequestError("'logit_bias' is not supported by TGI", param="logit_bias")
    if request.top_logprobs and not request.logprobs:
        raise InvalidRequestError("'top_logprobs' requires 'logprobs' to be true", param="top_logprobs")
    top_n = limits.max_top_n_tokens if limits is not None else 5
    if request.logprobs and request.top_logprobs and request.top_logprobs > top_n:
        raise UnsupportedRequestError(
            f"'top_logprobs' is at most {top_n} on this server (TGI's --max-top-n-tokens); you asked for "
            f"{request.top_logprobs}",
            param="top_logprobs",
        )


def check_prompt_size(prompt: str, *, bytes_per_token: int | None, limits: Limits) -> None:
    """Refuses a prompt that cannot fit before it is tokenized: no token covers more than ``bytes_per_token``
    bytes of the prompt (tgi/pipeline/prompt_size.py), so ``ceil(bytes / bytes_per_token)`` is a LOWER bound of its token
    count; when even that is over the limit, the prompt is too long whatever the tokenizer makes of it."""
    if not bytes_per_token or 4 * len(prompt) <= limits.max_input_tokens * bytes_per_token:  # <= 4 bytes a char
        return
    size = len(prompt.encode("utf-8", "surrogatepass"))
    least = -(-size // bytes_per_token)
    if least > limits.max_input_tokens:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {limits.max_total_tokens} tokens "
            f"(at most {limits.max_input_tokens} in the prompt). However, your messages resulted in "
            f"at least {least} tokens ({size} bytes). Please reduce the length of the messages.",
            param="messages",
        )


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
    several fields). Its ``grammar`` is added by ``ChatService.plan`` (tgi/pipeline/grammar.py)."""
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
