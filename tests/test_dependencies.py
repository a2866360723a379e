"""The dependency files agree: requirements*.txt repeat pyproject.toml's declared ranges, and every pin of
constraints.txt (what CI tests, written by .ci/lock.py) lies within them. After adding a dependency to
pyproject.toml, add the same line to requirements.txt (runtime) or requirements-test.txt (the test extra)
and regenerate the lock as .ci/lock.py says."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _requirements(path: Path) -> list[str]:
    """The requirement lines of a requirements file, comments and ``-r`` includes dropped, normalised."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [str(Requirement(line)) for line in lines if line and not line.startswith("-")]


def _normalised(lines: list[str]) -> list[str]:
    return [str(Requirement(line)) for line in lines]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not a name==version pin"
            pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.parametrize("path,declared", [
    ("requirements.txt", PROJECT["dependencies"]),
    ("requirements-test.txt", PROJECT["optional-dependencies"]["test"]),
    ("bench/requirements.txt", PROJECT["optional-dependencies"]["bench"]),
], ids=["runtime", "test", "bench"])
def test_requirement_files_repeat_pyproject(path: str, declared: list[str]) -> None:
    assert _requirements(ROOT / path) == _normalised(declared)


def test_requirement_files_include_the_runtime_set() -> None:
    assert "-r requirements.txt" in (ROOT / "requirements-test.txt").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("group", ["runtime", "test"])
def test_every_declared_package_is_pinned_within_its_range(group: str) -> None:
    declared = PROJECT["dependencies"] if group == "runtime" else PROJECT["optional-dependencies"]["test"]
    pins = _pins()
    for line in declared:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but not pinned in constraints.txt: regenerate it (.ci/lock.py)"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside the declared {req.specifier}")


def test_declared_ranges_have_an_upper_bound() -> None:
    """Compatible ranges: a new major release cannot break a fresh install unseen."""
    for line in PROJECT["dependencies"] + [d for extra in PROJECT["optional-dependencies"].values() for d in extra]:
        req = Requirement(line)
        assert any(s.operator in ("<", "<=", "~=", "==") for s in req.specifier), f"{line}: no upper bound"


def test_ci_installs_with_the_constraints() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "-r requirements-test.txt -c constraints.txt" in ci


def test_console_script_is_the_cli() -> None:
    import server_tgi

    module, _, func = PROJECT["scripts"]["functionary-tgi"].partition(":")
    assert module == "server_tgi" and getattr(server_tgi, func) is server_tgi.main
