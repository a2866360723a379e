"""Prompt template qwen2.5-text-only (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class Qwen25TextOnlyTemplate(PromptTemplate):
    version = "qwen2.5-text-only"
    stop_tokens = ()
