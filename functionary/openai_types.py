"""OpenAI chat-completion wire types (pydantic v2), named as on the wire.

Requests are parsed leniently where OpenAI clients differ (content as string or parts, legacy
``functions``/``function_call``, ``strict`` on tools, ``parallel_tool_calls``...). Unknown request
fields are kept in ``model_extra`` so the app can log them; they never cause an error.
The response side holds only the message and delta types the parsers produce; responses and chunks
are encoded straight to JSON on the hot path (tgi/pipeline/chat.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

# --------------------------------------------------------------------------------------------
# Request side


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TextContentPart(_Lenient):
    type: Literal["text"]
    text: str


class ImageURL(_Lenient):
    url: str
    detail: str | None = None


class ImageContentPart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


class OtherContentPart(_Lenient):
    """Any other part type (input_audio, file, ...): accepted by the parser, refused later with a
    clear 400 by the request layer rather than silently dropped."""

    type: str


ContentPart = Annotated[
    Union[TextContentPart, ImageContentPart, OtherContentPart], Field(union_mode="left_to_right")
]


class FunctionCall(_Lenient):
    """A complete call as found in an assistant message of the history."""

    name: str
    arguments: str = ""


class ToolCall(_Lenient):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Lenient):
    """One message of the request's history, any role."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None


class FunctionDefinition(_Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(_Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class CodeInterpreterTool(_Lenient):
    type: Literal["code_interpreter"]


Tool = Annotated[Union[FunctionTool, CodeInterpreterTool], Field(discriminator="type")]


class NamedFunction(_Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class NamedToolChoice(_Lenient):
    type: Literal["function"] = "function"
    function: NamedFunction


class NamedFunctionCall(_Lenient):
    name: str


class StreamOptions(_Lenient):
    include_usage: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(_Lenient):
    model: str | None = None
    messages: list[ChatMessage]
    tools: list[Tool] | None = None
    functions: list[FunctionDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    function_call: Literal["none", "auto", "required"] | NamedFunctionCall | None = None
    parallel_tool_calls: bool | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)
    seed: int | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None


# --------------------------------------------------------------------------------------------
# Response side


class ResponseFunctionCall(BaseModel):
    name: str
    arguments: str


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunctionCall


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ResponseToolCall] | None = None
    function_call: ResponseFunctionCall | None = None




class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    function_call: FunctionCallDelta | None = None
