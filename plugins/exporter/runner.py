"""Running an export: database and object store in, BIDS dataset out.

Each export gets its own working directory (``<output>/work/<task id>``), so
concurrent exports never touch each other (the predecessor shared one fixed
directory). The dataset is written there once; the ZIP is streamed from it
straight into the object store (a multipart upload) under a key of its own,
``exports/<experiment>/<task>.zip``, so a later export never overwrites an
earlier one. Blocking work (decoding, writing, validating, zipping) runs in
worker threads; the event loop only awaits. Progress is written to the task
row as it goes. A crash mid-export leaves the job message unacknowledged, so
the broker delivers it again and the export restarts from scratch; a task
that fails is marked ``failed`` with the reason, never left ``processing``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from eeghub.core.context import AppContext
from eeghub.core.errors import EeghubError, ObjectNotFound, PermanentFailure
from eeghub.core.packet import PacketError, decode_payload
from eeghub.core.ports import Delivery
from eeghub.core.quality import QualityWindow
from eeghub.core.timeline import Packet

from . import dataset, validation
from .labels import LabelMap
from .session import EventSpec, SessionSpec
from .zipstream import zip_directory

log = logging.getLogger("eeghub.exporter")


class ExportError(EeghubError):
    """The experiment cannot be exported (the message says why)."""


class Job(msgspec.Struct):
    task_id: uuid.UUID
    experiment_id: uuid.UUID


def output_dir(ctx: AppContext) -> Path:
    configured = ctx.settings.export.output_dir
    base = Path(configured) if configured else Path(ctx.settings.server.data_dir) / "exports"
    return base.expanduser().resolve()


Progress = Callable[..., Any]


class _SessionQuality(Mapping[str, Mapping[str, str]]):
    """Channel quality over a whole session, filled while its packets are
    decoded and read by the writer after the data (channels.tsv comes last)."""

    def __init__(self, names: list[str], types: list[str], total_samples: int, packet_samples: int) -> None:
        self.window = QualityWindow(
            names, types, window_samples=max(1, total_samples), expected_packet_samples=max(1, packet_samples)
        )
        self._report: dict[str, dict[str, str]] | None = None

    def add(self, stats: Any, samples: int) -> None:
        self.window.update(stats, samples)
        self._report = None

    def _build(self) -> dict[str, dict[str, str]]:
        if self._report is None:
            report = self.window.report().channel_report() if self.window.samples else {}
            self._report = {
                name: {
                    "status": entry["status"],
                    "description": "; ".join(entry["reasons"]) or ("warning" if entry["has_warning"] else "n/a"),
                }
                for name, entry in report.items()
            }
        return self._report

    def __getitem__(self, key: str) -> Mapping[str, str]:
        return self._build()[key]

    def __iter__(self) -> Any:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())


async def _fetch_all(ctx: AppContext, experiment_id: uuid.UUID) -> dict[str, Any]:
    db = ctx.database
    experiment = await db.fetchrow("SELECT * FROM experiments WHERE experiment_id = $1", experiment_id)
    if experiment is None:
        raise ExportError(f"Experiment {experiment_id} not found.")
    sessions = await db.fetch(
        """SELECT * FROM sessions WHERE experiment_id = $1 AND link_status = 'completed' AND end_time IS NOT NULL
           ORDER BY start_time, session_id""",
        experiment_id,
    )
    if not sessions:
        raise ExportError(f"No fully processed sessions found for experiment {experiment_id}.")
    stimuli = await db.fetch(
        "SELECT file_name, object_id FROM experiment_stimuli WHERE experiment_id = $1 ORDER BY file_name", experiment_id
    )
    return {"experiment": experiment, "sessions": sessions, "stimuli": stimuli}


async def build_dataset(ctx: AppContext, experiment_id: uuid.UUID, root: Path, progress: Progress) -> dict[str, Any]:
    """Write the experiment's BIDS dataset into ``root``; return a report."""
    loop = asyncio.get_running_loop()
    data = await _fetch_all(ctx, experiment_id)
    experiment, sessions = data["experiment"], data["sessions"]
    root.mkdir(parents=True, exist_ok=True)
    labels = LabelMap()
    users = sorted({s["user_id"] for s in sessions})
    for user in users:
        labels.assign("subject", user)
    per_subject: dict[str, int] = {}
    await progress(stage="writing dataset description", progress=8, sessions_total=len(sessions))
    await asyncio.to_thread(
        dataset.write_dataset_description,
        root,
        name=experiment["name"],
        extra={"GeneratedBy": [{"Name": "eeghub"}]},
    )
    await asyncio.to_thread(
        dataset.write_readme,
        root,
        title=experiment["name"],
        description=experiment["description"] or "",
    )
    await asyncio.to_thread(
        dataset.write_participants, root, [{"participant_id": f"sub-{labels.label('subject', u)}"} for u in users]
    )
    await progress(stage="copying stimuli", progress=10)
    bucket_media = ctx.settings.object_store.buckets.media
    stimuli_items: list[tuple[str, bytes]] = []
    missing_stimuli: list[str] = []
    for row in data["stimuli"]:
        try:
            stimuli_items.append((row["file_name"], await ctx.objects.get_bytes(bucket_media, row["object_id"])))
        except ObjectNotFound:
            missing_stimuli.append(row["file_name"])
    if stimuli_items:
        await asyncio.to_thread(dataset.write_stimuli, root, stimuli_items)
    report: dict[str, Any] = {"sessions": [], "skipped_sessions": [], "missing_stimuli": missing_stimuli}
    raw_bucket = ctx.settings.object_store.buckets.raw_data
    for index, session in enumerate(sessions):
        subject = labels.label("subject", session["user_id"])
        per_subject[subject] = per_subject.get(subject, 0) + 1
        session_label = labels.assign("session", session["session_id"], preferred=str(per_subject[subject]), scope=subject)
        task = labels.assign("task", session["session_type"] or "default")
        outcome = await _write_one(ctx, root, session, subject, session_label, task, raw_bucket, loop)
        (report["sessions"] if "error" not in outcome else report["skipped_sessions"]).append(outcome)
        done = index + 1
        await progress(
            stage=f"session {done}/{len(sessions)}",
            progress=10 + int(75 * done / len(sessions)),
            sessions_done=done,
        )
    if not report["sessions"]:
        raise ExportError("no session has data that could be exported: " + "; ".join(
            f"{s['session_id']}: {s['error']}" for s in report["skipped_sessions"]
        ))
    await asyncio.to_thread(labels.write, root)
    return report


async def _write_one(
    ctx: AppContext,
    root: Path,
    session: Any,
    subject: str,
    session_label: str,
    task: str,
    bucket: str,
    loop: asyncio.AbstractEventLoop,
) -> dict[str, Any]:
    db = ctx.database
    sid = session["session_id"]
    objects = await db.fetch(
        """SELECT r.object_id, r.timestamp_start_ms, r.timestamp_end_ms, r.num_samples, r.sampling_rate,
                  r.lsb_to_volts, r.content_sha256, r.channel_names, r.channel_types
           FROM session_object_links l JOIN raw_data_objects r ON r.object_id = l.object_id
           WHERE l.session_id = $1 ORDER BY r.timestamp_start_ms, r.object_id""",
        sid,
    )
    if not objects:
        return {"session_id": sid, "error": "no data linked to this session"}
    first = objects[0]
    if first["channel_names"] is None:
        return {"session_id": sid, "error": "objects were stored without their channel layout"}
    names, types = list(first["channel_names"]), list(first["channel_types"])
    rate, lsb = float(first["sampling_rate"]), float(first["lsb_to_volts"])
    usable = [o for o in objects if list(o["channel_names"] or []) == names and float(o["sampling_rate"]) == rate
              and float(o["lsb_to_volts"]) == lsb]
    inconsistent = [o["object_id"] for o in objects if o not in usable]
    packets = [
        Packet(o["object_id"], o["timestamp_start_ms"], o["timestamp_end_ms"], o["num_samples"] or 0, rate, o["content_sha256"])
        for o in usable
    ]
    events = await db.fetch(
        """SELECT e.event_id, e.onset, e.duration, e.trial_type, e.value, e.onset_corrected_us,
                  COALESCE(s.file_name, c.file_name) AS file_name
           FROM session_events e LEFT JOIN experiment_stimuli s ON s.stimulus_id = e.stimulus_id
           LEFT JOIN calibration_items c ON c.item_id = e.calibration_item_id
           WHERE e.session_id = $1 ORDER BY e.onset, e.event_id""",
        sid,
    )
    specs = [
        EventSpec(
            onset_us=e["onset_corrected_us"],
            logged_onset_s=float(e["onset"]),
            duration=float(e["duration"]),
            trial_type=e["trial_type"],
            value=e["value"],
            stim_file=e["file_name"],
            event_id=e["event_id"],
        )
        for e in events
    ]
    total = sum(p.num_samples for p in packets)
    quality = _SessionQuality(names, types, total, total // max(1, len(packets)))
    undecodable: list[str] = []
    previous = [0]

    def get_signals(object_id: str) -> np.ndarray:
        # Runs in the writer's thread: fetch through the event loop, decode here.
        payload = asyncio.run_coroutine_threadsafe(ctx.objects.get_bytes(bucket, object_id), loop).result(timeout=120)
        try:
            packet = decode_payload(payload, previous_trigger=previous[0], max_channels=ctx.settings.ingest.max_channels)
        except PacketError:
            undecodable.append(object_id)
            size = next(p.num_samples for p in packets if p.object_id == object_id)
            return np.zeros((len(names), size), dtype=np.int16)
        previous[0] = packet.last_trigger
        quality.add(packet.stats, packet.signals.shape[1])
        return packet.signals

    spec = SessionSpec(
        subject=subject,
        session=session_label,
        task=task,
        session_id=sid,
        session_type=session["session_type"] or "",
        sampling_rate=rate,
        lsb_to_volts=lsb,
        channel_names=names,
        channel_types=types,
        start_ms=int(session["start_time"].timestamp() * 1000),
        end_ms=int(session["end_time"].timestamp() * 1000),
        device_id=session["device_id"],
    )
    try:
        result = await asyncio.to_thread(
            dataset.write_session, root, spec, packets, get_signals, specs, quality, ctx.settings.export.power_line_frequency
        )
    except Exception as exc:  # noqa: BLE001 - one bad session is reported, the rest exported
        log.warning("session %s not exported: %s", sid, exc)
        return {"session_id": sid, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "session_id": sid,
        "subject": subject,
        "session": session_label,
        "task": task,
        "samples": result.samples,
        "duration_s": result.duration_s,
        "gaps": result.gaps,
        "duplicates_dropped": len(result.duplicates),
        "overlaps": result.overlaps,
        "packets_outside_session": len(result.outside_bounds),
        "trimmed_samples": result.trimmed_samples,
        "events_from_trigger": result.events_from_trigger,
        "events_from_log": result.events_from_log,
        "events_not_placed": result.events_not_placed,
        "missing_stimuli": result.missing_stimuli,
        "undecodable_objects": undecodable,
        "inconsistent_objects": inconsistent,
    }


async def update_task(ctx: AppContext, task_id: uuid.UUID, **fields: Any) -> None:
    if not fields:
        return
    columns = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(fields))
    await ctx.database.execute(
        f"UPDATE export_tasks SET {columns}, updated_at = NOW() WHERE task_id = $1",  # noqa: S608 - fixed names
        task_id,
        *fields.values(),
    )


async def run_export(ctx: AppContext, job: Job) -> None:
    row = await ctx.database.fetchrow("SELECT status FROM export_tasks WHERE task_id = $1", job.task_id)
    if row is None:
        raise PermanentFailure(f"export task {job.task_id} does not exist")
    if row["status"] in ("completed", "failed"):
        return  # a redelivered job that already finished
    workdir = output_dir(ctx) / "work" / str(job.task_id)
    shutil.rmtree(workdir, ignore_errors=True)
    root = workdir / "bids_dataset"
    await update_task(ctx, job.task_id, status="processing", stage="fetching metadata", progress=5,
                      started_at=datetime.now(UTC), error_message=None, sessions_done=0, bytes_done=0)

    async def progress(**fields: Any) -> None:
        await update_task(ctx, job.task_id, **fields)

    try:
        report = await build_dataset(ctx, job.experiment_id, root, progress)
        await progress(stage="validating", progress=87)
        summary = await asyncio.to_thread(validation.validate, root)
        await progress(stage="compressing and uploading", progress=90, validation=summary.to_dict())
        key = f"exports/{job.experiment_id}/{job.task_id}.zip"
        written = [0]
        info = await ctx.objects.put_stream(
            ctx.settings.object_store.buckets.bids_exports,
            key,
            zip_directory(root, prefix="bids_dataset/", on_progress=lambda n: written.__setitem__(0, n)),
            content_type="application/zip",
        )
        fields: dict[str, Any] = {
            "progress": 100,
            "stage": "done",
            "result_file_path": key,
            "size_bytes": info.size,
            "bytes_done": info.size,
            "finished_at": datetime.now(UTC),
            "report": report,
        }
        if summary.ok:
            await update_task(ctx, job.task_id, status="completed", **fields)
        else:
            await update_task(
                ctx,
                job.task_id,
                status="failed",
                error_message=f"the BIDS validator found {summary.errors} error(s); the archive is kept for inspection",
                **fields,
            )
    except (ExportError, validation.ValidatorUnavailable) as exc:
        await update_task(ctx, job.task_id, status="failed", error_message=str(exc), finished_at=datetime.now(UTC))
    except asyncio.CancelledError:
        raise  # shut-down: the message is redelivered and the export restarts
    except Exception as exc:
        log.exception("export %s failed", job.task_id)
        await update_task(ctx, job.task_id, status="failed", error_message=f"{type(exc).__name__}: {exc}"[:1000],
                          finished_at=datetime.now(UTC))
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


def make_handler(ctx: AppContext):  # type: ignore[no-untyped-def]
    async def handle(delivery: Delivery) -> None:
        try:
            job = msgspec.json.decode(delivery.message.body, type=Job)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise PermanentFailure(f"malformed export job: {exc}") from None
        await run_export(ctx, job)

    return handle


async def build_for_analysis(ctx: AppContext, experiment_id: uuid.UUID) -> tuple[Path, dict[str, Any]]:
    """The internal endpoint's uncompressed build, in a directory of its own."""
    target = output_dir(ctx) / "analysis" / str(experiment_id) / uuid.uuid4().hex
    target.parent.mkdir(parents=True, exist_ok=True)

    async def ignore(**_: Any) -> None:
        return None

    try:
        await build_dataset(ctx, experiment_id, target, ignore)
    except ExportError as exc:
        shutil.rmtree(target, ignore_errors=True)
        from eeghub.core.errors import NotFound

        raise NotFound(str(exc)) from None
    summary = await asyncio.to_thread(validation.validate, target)
    return target, summary.to_dict()
