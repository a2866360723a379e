"""Prompt template gemma3 (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class Gemma3Template(PromptTemplate):
    version = "gemma3"
    stop_tokens = ()
