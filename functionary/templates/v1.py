"""Prompt template v1 (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class V1Template(PromptTemplate):
    version = "v1"
    stop_tokens = ()
