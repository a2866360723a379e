"""Prompt template v2.llama3 (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class V2Llama3Template(PromptTemplate):
    version = "v2.llama3"
    stop_tokens = ()
