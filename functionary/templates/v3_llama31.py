"""Prompt template v3-llama3.1 (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class V3Llama31Template(PromptTemplate):
    version = "v3-llama3.1"
    stop_tokens = ()
