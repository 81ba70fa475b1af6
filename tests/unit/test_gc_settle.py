"""``eeghub.server.settle_heap``: the serving process freezes start-up's
objects and raises the young generation's threshold, as configured. Run in
a child process: freezing is process-wide and this test process must keep
collecting what its many applications leave."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eeghub.config import ConfigError, load_settings

SCRIPT = """
import gc, json, sys
from eeghub.server import settle_heap
from eeghub.config import load_settings
settings = load_settings(env={k: v for k, v in (a.split("=", 1) for a in sys.argv[1:])})
before = gc.get_threshold()
frozen = settle_heap(settings)
print(json.dumps({"frozen": frozen, "count": gc.get_freeze_count(), "before": before, "after": gc.get_threshold()}))
"""


def settle(*env: str) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", SCRIPT, *env], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_defaults_freeze_and_raise_the_young_threshold() -> None:
    result = settle()
    assert result["frozen"] == result["count"] > 1_000
    assert result["before"][0] == 700 and result["after"] == [10_000, *result["before"][1:]]


def test_both_can_be_turned_off() -> None:
    result = settle("EEGHUB_SERVER__GC_FREEZE=false", "EEGHUB_SERVER__GC_YOUNG_THRESHOLD=0")
    assert result["frozen"] == 0 and result["after"] == result["before"]


def test_a_negative_threshold_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="server.gc_young_threshold"):
        load_settings(env={"EEGHUB_SERVER__GC_YOUNG_THRESHOLD": "-1"})
