"""What a reliability suite hands back: how many cases it tried, which failed and why, and its figures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Report:
    suite: str
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def check(self, ok: bool, message: str) -> bool:
        self.cases += 1
        if not ok:
            self.fail(message)
        return ok

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        head = f"{self.suite}: {self.cases} cases, {len(self.failures)} failures"
        lines = [head, *(f"  {key}: {value}" for key, value in self.figures.items())]
        lines += [f"  FAIL {message}" for message in self.failures[:50]]
        if len(self.failures) > 50:
            lines.append(f"  ... and {len(self.failures) - 50} more")
        return "\n".join(lines)

    def as_json(self) -> str:
        return json.dumps({"suite": self.suite, "cases": self.cases, "failures": self.failures,
                           "figures": self.figures}, indent=1, default=str)
