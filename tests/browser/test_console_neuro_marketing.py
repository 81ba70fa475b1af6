"""The neuro-marketing page draws a real ERP result: the analysis of the
``erp`` plugin run on a generated experiment with known truth (of three
products only ``product_03.png`` evokes a response), stored as the plugin's
runner stores it, then read by the page through
``GET /api/v1/neuro-marketing/experiments/{eid}/analysis-results``.
(Recording that experiment through ingest is what
``tests/e2e/test_neuro_marketing.py`` does; here the page is under test.)"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from eeghub.core.experiment_analysis import ExperimentData
from eeghub.plugins.erp import synthetic
from eeghub.plugins.erp.analysis import ErpParameters
from eeghub.plugins.erp.pipeline import run_erp
from eeghub.plugins.erp.runner import recommendation_rows

from .conftest import serve

pytestmark = [pytest.mark.postgres]

OWNER = "nm-owner"
FAST = ErpParameters(permutations=50, product_permutations=500, bootstrap=200)


def analysed_experiment() -> dict[str, Any]:
    """``result_data`` as the runner writes it, from the real analysis."""
    design = synthetic.Design(calibration_s=150, main_s=180, product_strengths=(0.0, 0.0, 1.0))
    users = ["a", "b"]
    stimuli = synthetic.stimuli(design)
    data = ExperimentData("exp", stimuli, synthetic.sessions(users, design), users,
                          lambda u: synthetic.participant(u, design, users.index(u)))
    outcome = run_erp(data, FAST)
    return {"summary": outcome.summary, "recommendations": recommendation_rows(list(outcome.recommendations), stimuli),
            "outcome": outcome.status, "missing": list(outcome.missing), "details": outcome.result}


async def store(dsn: str, eid: str, result: dict[str, Any]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO erp_analysis_results (experiment_id, requested_by_user_id, status, kind, stage, progress,
                                                 result_data, completed_at)
               VALUES ($1, $2, 'completed', 'erp', 'done', 100, $3::jsonb, $4)""",
            uuid.UUID(eid), OWNER, json.dumps(result), dt.datetime.now(dt.UTC),
        )
    finally:
        await conn.close()


async def test_the_ranking_and_the_erp_are_drawn(local_env: dict[str, str], browser_factory: Any, tmp_path: Path) -> None:
    result = analysed_experiment()
    assert result["outcome"] == "ok" and [r["file_name"] for r in result["recommendations"]] == ["product_03.png"]
    with serve(local_env, tmp_path) as server:
        created = httpx.post(f"{server.base}/api/v1/experiments", json={"name": "Shelf"}, headers={"X-User-Id": OWNER})
        eid = created.json()["experiment_id"]
        await store(local_env["EEGHUB_DATABASE__URL"], eid, result)
        b = browser_factory(server.base)
        b.sign_in(OWNER)
        b.open(f"/console/experiments/{eid}/neuro-marketing")
        b.text_in("#nm-outcome", "ok")
        b.text_in("#nm-summary", "1 of 3 products")
        ranking = [row.get_attribute("data-file-name") for row in b.all("#nm-ranking tbody tr")]
        assert ranking == ["product_03.png", "product_02.png", "product_01.png"], ranking
        first = b.css("#nm-ranking tbody tr").text
        low, high = (f"{v:.3f}" for v in result["details"]["group"]["products"][0]["ci"])
        assert f"[{low}, {high}]" in first and "yes" in first, first
        assert b.css("#nm-recommendations tbody").text.startswith("product_03.png")
        # The ranking chart: one point per product, the recommended one red.
        points = b.all("#nm-ranking-chart circle")
        assert [p.get_attribute("fill") for p in points] == ["#d23c3c", "#555", "#555"]
        # The grand-average ERP: one line per class, in µV against seconds.
        erp = b.css("#nm-erp svg")
        assert len(b.all("#nm-erp svg polyline")) == 3 and "µV" in erp.text and "(s)" in erp.text
        assert b.foreign_references() == []
        b.shot("neuro-marketing-result")
