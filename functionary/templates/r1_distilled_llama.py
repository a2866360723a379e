"""Prompt template r1_distilled_llama (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class R1DistilledLlamaTemplate(PromptTemplate):
    version = "r1_distilled_llama"
    stop_tokens = ()
