"""Small helpers for HTTP-level tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any


def user(name: str) -> dict[str, str]:
    """Headers of a caller in trusted-header mode."""
    return {"X-User-Id": name}


def events_csv(rows: list[tuple[float, float, str, str]]) -> bytes:
    lines = ["onset,duration,trial_type,file_name"]
    lines += [f"{o},{d},{t},{f}" for o, d, t, f in rows]
    return ("\n".join(lines) + "\n").encode()


def end_form(metadata: dict[str, Any], csv: bytes | None = None) -> dict[str, Any]:
    files: dict[str, Any] = {"metadata": (None, json.dumps(metadata))}
    if csv is not None:
        files["events_log_csv"] = ("events.csv", csv, "text/csv")
    return {"files": files}


async def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def start_export(client: Any, eid: str, owner: str) -> str:
    """Ask for the export of experiment ``eid``; its status URL."""
    r = await client.post(f"/api/v1/experiments/{eid}/export", headers=user(owner))
    assert r.status_code == 202, r.text
    return str(r.json()["status_url"])


async def finished_task(client: Any, status_url: str, owner: str, timeout: float = 120) -> dict[str, Any]:
    """The export task once it is completed or failed."""

    async def finished() -> Any:
        r = await client.get(status_url, headers=user(owner))
        assert r.status_code == 200, r.text
        task = r.json()
        return task if task["status"] in ("completed", "failed") else None

    result: dict[str, Any] = await wait_for(finished, timeout=timeout, interval=0.25)
    return result
