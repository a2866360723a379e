"""Prompt template r1_distilled_qwen (placeholder: being written)."""

from functionary.templates.base import PromptTemplate


class R1DistilledQwenTemplate(PromptTemplate):
    version = "r1_distilled_qwen"
    stop_tokens = ()
