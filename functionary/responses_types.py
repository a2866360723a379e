"""OpenAI Responses API wire types (pydantic v2), named as on the wire (``POST /v1/responses``).

Request side: what the gateway takes. Items and tools whose ``type`` it does not know parse into ``Other*``
types so that the translation (tgi/api/responses.py) can refuse them with a 400 naming the field, rather
than failing with a vague validation error or dropping them. Fields outside this model are kept in
``model_extra`` and refused there too (OpenAI answers an unknown parameter with a 400 as well).

Response side: the ``response`` object and its output items, as the openai client's types read them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

# --------------------------------------------------------------------------------------------
# Request side


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class InputText(_Lenient):
    """A text part: ``input_text`` in user/system/developer messages, ``output_text`` in assistant ones."""

    type: Literal["input_text", "output_text"]
    text: str


class OtherContent(_Lenient):
    """input_image, input_file, input_audio, refusal, ...: refused by the translation."""

    type: str


Content = Annotated[Union[InputText, OtherContent], Field(union_mode="left_to_right")]


class MessageItem(_Lenient):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[Content]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(_Lenient):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Lenient):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[Content]
    id: str | None = None
    status: str | None = None


class OtherItem(_Lenient):
    """reasoning, item_reference, computer_call_output, ...: refused by the translation."""

    type: str


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return kind if kind in ("message", "function_call", "function_call_output") else "other"


InputItem = Annotated[
    Union[
        Annotated[MessageItem, Tag("message")],
        Annotated[FunctionCallItem, Tag("function_call")],
        Annotated[FunctionCallOutputItem, Tag("function_call_output")],
        Annotated[OtherItem, Tag("other")],
    ],
    Discriminator(_item_kind),
]


class FunctionToolParam(_Lenient):
    """Responses' flat function tool (no ``function`` wrapper as in chat)."""

    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OtherTool(_Lenient):
    """web_search, file_search, code_interpreter, mcp, ...: hosted tools, refused by the translation."""

    type: str


Tool = Annotated[Union[FunctionToolParam, OtherTool], Field(union_mode="left_to_right")]


class ToolChoiceFunction(_Lenient):
    type: Literal["function"]
    name: str


class OtherToolChoice(_Lenient):
    type: str


ToolChoice = Union[Literal["none", "auto", "required"], ToolChoiceFunction, OtherToolChoice]


class FormatText(_Lenient):
    type: Literal["text"]


class FormatJSONObject(_Lenient):
    type: Literal["json_object"]


class FormatJSONSchema(_Lenient):
    type: Literal["json_schema"]
    name: str
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[Union[FormatText, FormatJSONObject, FormatJSONSchema], Field(discriminator="type")]


class TextConfig(_Lenient):
    format: TextFormat | None = None
    verbosity: str | None = None


class ResponsesRequest(_Lenient):
    model: str | None = None
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    stream: bool | None = False
    store: bool | None = None
    user: str | None = None
    # accepted when absent, null or neutral; anything else is refused by the translation
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    include: list[str] | None = None
    background: bool | None = None
    truncation: str | None = None
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    conversation: Any = None
    prompt: Any = None
    stream_options: dict[str, Any] | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


# --------------------------------------------------------------------------------------------
# Response side


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class OutputFunctionCall(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


OutputItem = Union[OutputMessage, OutputFunctionCall]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    code: str
    message: str
    type: str | None = None
    param: str | None = None


class Response(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    # echoed from the request, as OpenAI does
    instructions: str | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    parallel_tool_calls: bool = True
    previous_response_id: None = None
    reasoning: None = None
    store: bool = False
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: Any = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_p: float | None = None
    truncation: Literal["disabled"] = "disabled"
    user: str | None = None
