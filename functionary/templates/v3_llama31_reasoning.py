"""Prompt template v3-llama3.1-reasoning (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class V3Llama31ReasoningTemplate(PromptTemplate):
    version = "v3-llama3.1-reasoning"
    stop_tokens = ()
