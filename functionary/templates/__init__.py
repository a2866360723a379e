"""The registry of prompt-template versions: one module per version, one line here per version."""

from __future__ import annotations

from functionary.errors import UnknownTemplateError
from functionary.templates.base import PromptTemplate
from functionary.templates.v1 import V1Template
from functionary.templates.v2 import V2Template
from functionary.templates.v2_llama3 import V2Llama3Template
from functionary.templates.v3_llama3 import V3Llama3Template
from functionary.templates.v3_llama31 import V3Llama31Template
from functionary.templates.v3_llama31_reasoning import V3Llama31ReasoningTemplate
from functionary.templates.r1_distilled_llama import R1DistilledLlamaTemplate
from functionary.templates.qwen25_text_only import Qwen25TextOnlyTemplate
from functionary.templates.cogito import CogitoTemplate
from functionary.templates.gemma3 import Gemma3Template
from functionary.templates.r1_distilled_qwen import R1DistilledQwenTemplate
from functionary.templates.r1 import R1Template

TEMPLATES: dict[str, type[PromptTemplate]] = {
    "v1": V1Template,
    "v2": V2Template,
    "v2.llama3": V2Llama3Template,
    "v3.llama3": V3Llama3Template,
    "v3-llama3.1": V3Llama31Template,
    "v3-llama3.1-reasoning": V3Llama31ReasoningTemplate,
    "r1_distilled_llama": R1DistilledLlamaTemplate,
    "qwen2.5-text-only": Qwen25TextOnlyTemplate,
    "cogito": CogitoTemplate,
    "gemma3": Gemma3Template,
    "r1_distilled_qwen": R1DistilledQwenTemplate,
    "r1": R1Template,
}


def get_template(version: str) -> PromptTemplate:
    """The template for ``version``; an unknown one raises an error that lists the known ones."""
    try:
        cls = TEMPLATES[version]
    except KeyError:
        known = ", ".join(sorted(TEMPLATES))
        raise UnknownTemplateError(
            f"unknown prompt template version {version!r}; known versions: {known}"
        ) from None
    return cls()
