"""An export whose BIDS validator is missing or cannot run (PostgreSQL,
filesystem store, in-process broker): it is logged, ``/api/v1/health`` calls
the exporter degraded with the reason from start-up on, the task says the
dataset could not be validated, and the archive is kept and downloadable,
named after the experiment."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import finished_task, start_export, user
from tests.e2e.test_export_hardening import T0, check_archive, join, new_experiment, record, wait_processed

pytestmark = pytest.mark.postgres

OWNER = "lab-owner"


def broken_validator(tmp_path: Path) -> str:
    """An executable that starts but prints no report (a broken install)."""
    script = tmp_path / "bids-validator-broken"
    script.write_text("#!/bin/sh\necho 'deno: cannot load the schema' >&2\nexit 3\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.parametrize("kind", ["missing", "broken"])
async def test_an_unusable_validator_degrades_health_and_keeps_the_archive(
    app_client: Any, local_env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    command = str(tmp_path / "no" / "bids-validator-deno") if kind == "missing" else broken_validator(tmp_path)
    env = {**local_env, "EEGHUB_EXPORT__VALIDATOR": command, "EEGHUB_EXPORT__INTERNAL_TOKEN": "t" * 32}
    subject = "subj-v"
    async with app_client(env) as (client, _):
        health = (await client.get("/api/v1/health")).json()
        exporter = health["plugins"]["exporter"]
        assert health["status"] == "degraded" and exporter["status"] == "degraded", health
        reason = exporter["detail"]["reason"]
        assert ("not an executable file" in reason) if kind == "missing" else ("--version exited with 3" in reason), reason

        eid = await new_experiment(client, "Visual oddball: pilot/2 ../x")
        await join(client, eid, subject)
        await record(client, env["EEGHUB_DATABASE__URL"], eid, subject, "s-valid", T0, seed=5)
        await wait_processed(client, {"s-valid": subject})
        task = await finished_task(client, await start_export(client, eid, OWNER), OWNER)
        assert task["status"] == "failed", task
        assert "could not be validated" in task["error_message"] and "archive is kept" in task["error_message"], task
        assert task["validation"]["errors"] is None and task["validation"]["validator_error"], task
        assert task["result_file_path"] and task["download_url"] == f"/api/v1/export-tasks/{task['task_id']}/download"
        # A participant sees that it failed, not the reason's detail.
        mine = (await client.get(f"/api/v1/export-tasks/{task['task_id']}", headers=user(subject))).json()
        assert mine["status"] == "failed" and "validat" not in mine["error_message"]

        download = await client.get(task["download_url"], headers=user(OWNER))
        assert download.status_code == 200, download.text
        archive = check_archive(download.content)
        assert any(n.endswith("_eeg.vhdr") for n in archive.namelist())
        disposition = download.headers["content-disposition"]
        expected = f"visual-oddball-pilot-2-x-{task['task_id'].replace('-', '')[:8]}.zip"
        assert disposition == f"attachment; filename=\"{expected}\"; filename*=UTF-8''{expected}", disposition

        health = (await client.get("/api/v1/health")).json()
        assert health["plugins"]["exporter"]["status"] == "degraded"
        assert health["plugins"]["exporter"]["detail"]["reason"] == task["validation"]["validator_error"]

        # The internal build says so too.
        r = await client.post("/internal/v1/create-bids-for-analysis", json={"experiment_id": eid},
                              headers={"X-Internal-Token": "t" * 32})
        assert r.status_code == 200, r.text
        built = r.json()
        assert built["validation"]["errors"] is None
        assert built["validation"]["validator_error"] == task["validation"]["validator_error"]
        assert "could not be validated" in built["message"] and Path(built["bids_path"]).is_dir()
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name == "eeghub.exporter"]
    assert any("exports will not be validated" in m for m in logged), logged  # at start-up
    assert any(f"export {task['task_id']}" in m and "not validated" in m for m in logged), logged


async def test_a_working_validator_is_healthy_and_the_report_names_every_warned_key(
    app_client: Any, local_env: dict[str, str]
) -> None:
    """Nothing in ``[export.bids]``: each key the validator recommends is in
    the report's ``left_for_the_lab`` (EEGReference too, written as n/a)."""
    subject = "subj-w"
    async with app_client(local_env) as (client, _):
        exporter = (await client.get("/api/v1/health")).json()["plugins"]["exporter"]
        assert exporter["status"] == "ok" and os.path.basename(exporter["detail"]["validator"]) == "bids-validator-deno"
        eid = await new_experiment(client, "Unconfigured lab")
        await join(client, eid, subject)
        await record(client, local_env["EEGHUB_DATABASE__URL"], eid, subject, "s-plain", T0, seed=6)
        await wait_processed(client, {"s-plain": subject})
        task = await finished_task(client, await start_export(client, eid, OWNER), OWNER)
    assert task["status"] == "completed" and task["validation"]["errors"] == 0, task
    warned = {i["sub_code"] or "Authors" for i in task["validation"]["issues"]}  # TOO_FEW_AUTHORS has no sub code
    left = [f["field"] for f in task["report"]["left_for_the_lab"]]
    assert warned <= set(left) and set(left) - warned == {"EEGReference"}, (sorted(warned), left)
    assert {"Authors", "License", "TaskDescription", "HEDVersion", "StimulusPresentation", "HeadCircumference"} <= warned
