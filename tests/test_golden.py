"""The tokens every strategy x cache gives on the shipped models equal those recorded before
the seams redesign (issue 14): ``tests/golden/record.py`` recorded them on the old code."""

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(HERE))

import record  # noqa: E402

pytestmark = pytest.mark.slow


def test_every_recorded_case_gives_the_same_tokens_and_forwards():
    old = json.loads(record.OUT.read_text())
    now = record.record()
    assert set(now) == set(old)
    differ = [k for k in old if now[k] != old[k]]
    assert not differ, f"{len(differ)} of {len(old)} cases changed: {differ[:10]}"
