"""Prompt template r1 (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class R1Template(PromptTemplate):
    version = "r1"
    stop_tokens = ()
