"""Prompt template cogito: qwen2.5-text-only with the "deep thinking" system line."""

from __future__ import annotations

from functionary.templates.qwen25_text_only import Qwen25TextOnlyTemplate


class CogitoTemplate(Qwen25TextOnlyTemplate):
    version = "cogito"

    def _system_text(self, system: str | None, *, tools: bool) -> str:
        if system is None:
            return "Enable deep thinking subroutine."
        # Without tools the trained template drops the period (kept: it is what the model saw).
        return ("Enable deep thinking subroutine.\n\n" if tools else "Enable deep thinking subroutine\n\n") + system
