"""Prompt template v3.llama3 (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class V3Llama3Template(PromptTemplate):
    version = "v3.llama3"
    stop_tokens = ()
