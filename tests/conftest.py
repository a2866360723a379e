"""Suite-wide: tests marked ``reference`` read the reference corpus (``../shared/reference/functionary``
beside the checkout, or ``$FUNCTIONARY_REFERENCE_DIR``). Without it they are skipped, and the run says so in
one line at the end, naming the directory it looked in. The project's own tests cover every template
version, the gateway and the launcher without the corpus."""

from __future__ import annotations

import pytest

from tests.functionary.cases import REFERENCE, reference_available

_SKIPPED = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reference: needs the reference corpus (FUNCTIONARY_REFERENCE_DIR)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if reference_available():
        return
    skip = pytest.mark.skip(reason=f"no reference corpus at {REFERENCE}")
    marked = [item for item in items if item.get_closest_marker("reference")]
    for item in marked:
        item.add_marker(skip)
    config.stash[_SKIPPED] = len(marked)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    skipped = config.stash.get(_SKIPPED, 0)
    if skipped:
        terminalreporter.write_line(
            f"reference corpus: none at {REFERENCE}; {skipped} tests that compare with it were skipped "
            "(set FUNCTIONARY_REFERENCE_DIR to a corpus's functionary/ directory to run them)"
        )
