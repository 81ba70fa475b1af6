"""What a plain install brings for the export: the BIDS validator as a
run-time dependency, the configured validator's lookup, and the archive's name."""

from __future__ import annotations

import importlib.metadata
import re
import urllib.parse
import uuid
from pathlib import Path

import pytest

from eeghub.plugins.exporter import validation
from eeghub.plugins.exporter.routes import archive_name


def test_the_validator_is_a_run_time_dependency() -> None:
    requirements = importlib.metadata.requires("eeghub") or []
    runtime = [r for r in requirements if "extra ==" not in r]
    assert any(re.match(r"bids-validator-deno\b", r) for r in runtime), runtime
    containerfile = (Path(__file__).parents[2] / "Containerfile").read_text()
    assert "bids-validator-deno --version" in containerfile


def test_a_configured_validator_is_looked_up(tmp_path: Path) -> None:
    with pytest.raises(validation.ValidatorUnavailable, match="export.validator"):
        validation.find_validator(str(tmp_path / "missing"))
    with pytest.raises(validation.ValidatorUnavailable, match="not found on PATH"):
        validation.find_validator("no-such-validator-here")
    not_executable = tmp_path / "validator"
    not_executable.write_text("#!/bin/sh\n")
    with pytest.raises(validation.ValidatorUnavailable, match="not an executable file"):
        validation.find_validator(str(not_executable))
    assert validation.probe().endswith("bids-validator-deno")  # the installed one runs


def test_archive_names() -> None:
    task = uuid.UUID("3f2a9c1e-0000-4000-8000-000000000000")
    assert archive_name("Visual Oddball 2025", task) == "visual-oddball-2025-3f2a9c1e.zip"
    assert archive_name("視覚オドボール課題", task) == "視覚オドボール課題-3f2a9c1e.zip"
    assert archive_name('../../etc/passwd\r\nX-Evil: "1"', task) == "etc-passwd-x-evil-1-3f2a9c1e.zip"
    assert archive_name("", task) == archive_name("---", task) == archive_name(None, task) == "experiment-3f2a9c1e.zip"
    assert archive_name("Ｆｕｌｌ　ｗｉｄｔｈ", task) == "full-width-3f2a9c1e.zip"  # NFKC
    long = archive_name("a" * 300, task)
    assert long == "a" * 60 + "-3f2a9c1e.zip"
    for name in ("視覚", '"; filename=x', "a\x00b"):
        made = archive_name(name, task)
        assert "/" not in made and "\\" not in made and '"' not in made and ";" not in made
        assert urllib.parse.quote(made, safe="") == urllib.parse.quote(made, safe="")  # encodable as filename*
