"""Prompt template cogito (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class CogitoTemplate(PromptTemplate):
    version = "cogito"
    stop_tokens = ()
