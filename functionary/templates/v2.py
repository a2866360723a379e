"""Prompt template v2 (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class V2Template(PromptTemplate):
    version = "v2"
    stop_tokens = ()
