"""The fast tier (``pytest -m "not slow"``, the README's command) still tests every part.

A ``pytestmark`` put on the wrong module or a ``slow`` on a whole test class could deselect a
module, a strategy or a cache policy without any failure; these tests collect the tier as the
README's command does and check what is in it.
"""

import re
from pathlib import Path

import pytest

import paradecode

TESTS = Path(__file__).parent
ROOT = TESTS.parent
WHOLLY_SLOW: set = set()  # test modules meant to have no fast test (none today)


class _Tier:
    """Records the fast tier (kept items) and the slow one (deselected by ``-m``)."""

    def __init__(self) -> None:
        self.fast: list = []
        self.slow: list = []

    def pytest_deselected(self, items) -> None:
        self.slow += [item.nodeid for item in items]

    def pytest_collection_finish(self, session) -> None:
        self.fast = [item.nodeid for item in session.items]


@pytest.fixture(scope="module")
def tier() -> _Tier:
    found = _Tier()
    args = ["--collect-only", "-q", "-m", "not slow", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
            "-c", str(ROOT / "pyproject.toml"), str(TESTS)]
    assert pytest.main(args, plugins=[found]) == pytest.ExitCode.OK
    return found


def test_fast_tier_is_not_empty_and_leaves_the_slow_tests_out(tier):
    assert len(tier.fast) > 150 and tier.slow
    assert "tests/test_markers.py::test_fast_tier_is_not_empty_and_leaves_the_slow_tests_out" in tier.fast
    assert not set(tier.fast) & set(tier.slow)


def test_every_test_module_keeps_a_fast_test(tier):
    modules = {p.name for p in TESTS.glob("test_*.py")} - WHOLLY_SLOW
    fast_modules = {nodeid.split("::")[0].rsplit("/", 1)[-1] for nodeid in tier.fast}
    assert modules - fast_modules == set()


@pytest.mark.parametrize("name", sorted(paradecode.strategies()) + sorted(paradecode.cache_policies()))
def test_every_strategy_and_cache_policy_keeps_a_fast_test(tier, name):
    """By name in a test id (a parameter or the test's name), e.g. ``[prophet]``, ``-dkv-decode]``."""
    word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])")
    assert any(word.search(nodeid.split("::", 1)[1]) for nodeid in tier.fast), name
