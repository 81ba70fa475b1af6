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
import collections
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from eeghub.core.cluster import job_claim
from eeghub.core.context import AppContext
from eeghub.core.errors import EeghubError, HttpError, ObjectNotFound, PermanentFailure
from eeghub.core.files import unwrap_zstd
from eeghub.core.metrics import metrics_of
from eeghub.core.packet import PacketError, PacketLayout, PacketStats, decode_payload
from eeghub.core.packet_batch import MultiplexedDecoder
from eeghub.core.ports import Delivery
from eeghub.core.quality import QualityWindow
from eeghub.core.raw_objects import RawLocation, RawReader, payload_of
from eeghub.core.timeline import Packet, packet_duration_ms, plan_stream

from . import dataset, metadata, validation
from .labels import LabelMap
from .placement import BLOCK_PACKETS, Segment
from .session import EventSpec, SessionResult, SessionSpec
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

    def add_batch(self, stats: np.ndarray, samples: Sequence[int]) -> None:
        """Add packets' counters at once: ``stats`` is (packets × 5 × channels)
        as ``MultiplexedDecoder.decode_into`` returns them, ``samples`` each
        packet's sample count. While the window holds every sample added
        (as here: it is sized to the whole session) it never evicts, so its
        report depends only on the sums, the extremes and the sample total,
        and one update with the batch's totals gives the same report as one
        update per packet; otherwise the packets are added one by one."""
        if len(samples) == 0:
            return
        total = int(sum(samples))
        if self.window.samples + total > self.window.window_samples:
            for row, n in zip(stats, samples, strict=True):
                self.add(PacketStats(row[0], row[1], row[2], row[3], row[4]), n)
            return
        sums = stats.sum(axis=0)
        self.add(
            PacketStats(sums[0], stats[:, 1].min(axis=0), stats[:, 2].max(axis=0), sums[3], sums[4]), total
        )

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

    def channel_report(self) -> dict[str, dict[str, Any]]:
        """The full per-channel report (the predecessor's keys), for the
        session's ``…_desc-quality_channels.json``."""
        return self.window.report().channel_report() if self.window.samples else {}

    def __getitem__(self, key: str) -> Mapping[str, str]:
        return self._build()[key]

    def __iter__(self) -> Any:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())


PREFETCH_DEPTH = 16
"""Packet objects requested ahead of the session writer (fetched or in flight)."""

FETCH_TIMEOUT_S = 120.0
"""How long the writer waits for one packet object."""

Fetch = Callable[[str], Awaitable[bytes]]


class PacketPrefetcher:
    """Packet objects fetched on the event loop ahead of the writer thread.

    The writer (a worker thread) asks for objects a batch at a time with
    :meth:`get_many` (or one at a time with :meth:`get`), in the order given
    as ``order`` (a prediction). As many of the next ones as the batch holds
    (at least ``depth``) are being fetched, or wait fetched, so the writer
    finds finished or running fetches instead of issuing one GET at a time;
    memory is bounded by two batches (or ``depth``) of payloads. The writer
    hands the loop more positions once per batch (or per ``depth // 2``
    objects with :meth:`get`) and is woken once per batch, when its last
    awaited object arrives. On the loop, up to ``depth`` worker tasks run
    ``fetch``, a new worker joining only while a fetch is actually waiting
    (a store that answers at once is served by one worker, without a task
    per object). Objects the writer skips are not fetched, or their payloads
    dropped; one it asks for that is not ahead in ``order`` is fetched
    alone, as without prefetching. A failed fetch (``ObjectNotFound`` too)
    is that object's outcome only: raised by :meth:`get`, returned in
    :meth:`get_many`'s list. :meth:`aclose` (on the loop) cancels what still
    runs; a writer still waiting then gets a RuntimeError.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fetch: Fetch,
        order: Sequence[str],
        *,
        depth: int = PREFETCH_DEPTH,
        timeout: float = FETCH_TIMEOUT_S,
    ) -> None:
        self._loop, self._fetch, self._timeout = loop, fetch, timeout
        self._order = list(order)
        self._position: dict[str, int] = {}
        for position, object_id in enumerate(self._order):
            self._position.setdefault(object_id, position)
        self._depth = max(1, depth)
        self._batch = max(1, self._depth // 2)
        self._ready = threading.Condition(threading.Lock())
        # Guarded by self._ready (written by the writer thread, read by both):
        self._results: dict[int, tuple[bytes | None, BaseException | None]] = {}
        self._consumed = 0  # positions before this one are taken or skipped
        self._waiting: set[int] = set()  # positions the writer waits for, not fetched yet
        self._closed = False
        # Writer thread only:
        self._requested = 0  # positions before this one were handed to the loop
        # Loop thread only:
        self._next = 0  # the next position a worker takes
        self._allowed = 0  # workers take positions before this one
        self._workers: set[asyncio.Task[None]] = set()
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._wake_pending = False

    # -- writer thread
    def get(self, object_id: str) -> bytes:
        """One object's payload (raises what its fetch raised)."""
        outcome = self.get_many([object_id])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def get_many(self, object_ids: Sequence[str]) -> list[bytes | Exception]:
        """The payloads of ``object_ids``, in that order, with one wait (and
        one wake-up of the loop) for a run of objects that are ahead in
        ``order``; a fetch that failed gives its exception in the list. The
        objects after the last one asked for are fetched meanwhile, as many
        as were asked for (at least ``depth``), so the next call finds them
        fetched. Raises RuntimeError when closed, TimeoutError when no
        awaited object arrives within the timeout."""
        ids = list(object_ids)
        out: list[bytes | Exception] = []
        i = 0
        while i < len(ids):
            position = self._position.get(ids[i], -1)
            with self._ready:
                if self._closed:
                    raise RuntimeError("packet prefetch closed")
                alone = position < self._consumed  # not predicted, or asked for again
            if alone:  # fetched by itself, as without prefetching
                out.append(self._fetch_alone(ids[i]))
                i += 1
                continue
            run = [position]
            for object_id in ids[i + 1 :]:  # the run: positions ahead of each other
                following = self._position.get(object_id, -1)
                if following <= run[-1]:
                    break
                run.append(following)
            out += self._take(run, ids[i : i + len(run)])
            i += len(run)
        return out

    def _fetch_alone(self, object_id: str) -> bytes | Exception:
        try:
            return asyncio.run_coroutine_threadsafe(self._fetch(object_id), self._loop).result(timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001 - handed to the caller, for this object only
            return exc

    def _take(self, positions: list[int], object_ids: list[str]) -> list[bytes | Exception]:
        first, last = positions[0], positions[-1]
        stop = min(len(self._order), last + 1 + max(self._depth, len(positions)))
        start = max(self._requested, first)
        # Top up in batches; at once when a wanted object or the last ones are not requested yet.
        if stop > start and (start <= last or stop - start >= self._batch or stop == len(self._order)):
            self._requested = stop
            self._loop.call_soon_threadsafe(self._launch, stop)
        with self._ready:
            for skipped in range(self._consumed, first):  # gone past: drop what was fetched for them
                self._results.pop(skipped, None)
            self._consumed = first
            waiting = self._waiting = {p for p in positions if p not in self._results}
            deadline = time.monotonic() + self._timeout
            left_before = len(waiting)
            while waiting:
                if self._closed:
                    raise RuntimeError("packet prefetch closed")
                now = time.monotonic()
                if len(waiting) < left_before:  # progress: the timeout counts from the last arrival
                    left_before, deadline = len(waiting), now + self._timeout
                if now >= deadline:
                    late = object_ids[positions.index(min(waiting))]
                    raise TimeoutError(f"object {late} not fetched within {self._timeout:g} s")
                self._ready.wait(min(deadline - now, 1.0))
            outcomes = [self._results.pop(p) for p in positions]
            for skipped in range(first, last):
                self._results.pop(skipped, None)
            self._consumed = last + 1
        return [payload if error is None else error for payload, error in outcomes]  # type: ignore[misc]

    # -- event loop
    def start(self, count: int) -> None:
        """Start fetching the first ``count`` objects now, before the writer asks
        (call on the loop, before the writer runs): they are fetched while the
        writer plans the recording."""
        stop = min(len(self._order), max(0, count))
        self._requested = max(self._requested, stop)
        self._launch(stop)

    def _launch(self, stop: int) -> None:
        if self._closed:
            return
        self._allowed = max(self._allowed, stop)  # positions the writer went past are passed over by the workers
        self._wake()

    def _wake(self) -> None:
        """Get one more worker going if there is work: an idle one, or a new one."""
        self._wake_pending = False
        if self._closed or self._next >= self._allowed:
            return
        if self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
        elif len(self._workers) < self._depth:
            task = self._loop.create_task(self._work())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _work(self) -> None:
        while not self._closed:
            if self._next >= self._allowed:
                waiter = self._loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            position = self._next
            self._next += 1
            if position < self._consumed:
                continue  # the writer has gone past it
            if self._next < self._allowed and not self._wake_pending:
                # Should this fetch wait, another worker takes the next position meanwhile.
                self._wake_pending = True
                self._loop.call_soon(self._wake)
            outcome: tuple[bytes | None, BaseException | None]
            try:
                outcome = (await self._fetch(self._order[position]), None)
            except Exception as exc:  # noqa: BLE001 - raised in the writer, for this object only
                outcome = (None, exc)
            with self._ready:
                if position >= self._consumed and not self._closed:
                    self._results[position] = outcome
                    waiting = self._waiting
                    if position in waiting:
                        waiting.discard(position)
                        if not waiting:  # one wake-up per wait of the writer
                            self._ready.notify()

    async def aclose(self) -> None:
        with self._ready:
            self._closed = True
            self._results.clear()
            self._ready.notify_all()
        workers = list(self._workers)
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
        self._idle.clear()


def fetch_order(packets: Sequence[Packet], start_ms: float | None, end_ms: float | None) -> list[str]:
    """The order in which ``write_session`` will ask for ``packets``' signals,
    as a cheap prediction: start-time order without exact duplicates (as
    ``plan_stream`` keeps them), without packets wholly outside the session.
    Packets later dropped as overlapped are in it; the prefetcher skips them."""
    lower = float("-inf") if start_ms is None else start_ms - 1
    upper = float("inf") if end_ms is None else end_ms + 1
    try:
        kept = plan_stream(packets).kept
        return [p.object_id for p in kept if p.start_ms <= upper and p.start_ms + packet_duration_ms(p) >= lower]
    except Exception:  # noqa: BLE001 - malformed packet metadata: write_session raises its own error for it
        return [p.object_id for p in packets]


class SessionSignals:
    """The packet source of ``dataset.write_session``: payloads from a
    :class:`PacketPrefetcher`, decoded here, in the writer's thread, in time
    order, feeding the session's channel quality. An undecodable or missing
    object becomes a zero-filled packet, listed in ``undecodable`` or
    ``missing``.

    ``write_session`` calls :meth:`place` (a ``placement.SegmentSource``)
    with a block's packets at a time: their payloads come in one
    :meth:`PacketPrefetcher.get_many` and are decoded by one numba call
    (``core.packet_batch``, which releases the GIL) straight into the
    multiplexed block. Calling the object with one id gives that packet's
    signals (channels × samples), as ``decode_payload`` does."""

    def __init__(
        self,
        prefetcher: PacketPrefetcher,
        packets: Sequence[Packet],
        num_channels: int,
        quality: _SessionQuality | None,
        max_channels: int = 128,
    ) -> None:
        self._prefetcher, self._quality = prefetcher, quality
        self._num_channels, self._max_channels = num_channels, max_channels
        self._decoder = MultiplexedDecoder(max_channels=max_channels)
        self._sizes: dict[str, int] = {}
        for p in packets:
            self._sizes.setdefault(p.object_id, p.num_samples)
        self._previous = 0
        self.undecodable: list[str] = []
        self.missing: list[str] = []

    def __call__(self, object_id: str) -> np.ndarray:
        try:
            payload = payload_of(self._prefetcher.get(object_id))
        except ObjectNotFound:
            self.missing.append(object_id)
            return self._zeros(object_id)
        try:
            packet = decode_payload(payload, previous_trigger=self._previous, max_channels=self._max_channels)
        except PacketError:
            self.undecodable.append(object_id)
            return self._zeros(object_id)
        self._previous = packet.last_trigger
        if self._quality is not None:
            self._quality.add(packet.stats, packet.signals.shape[1])
        return packet.signals

    def place(self, segments: Sequence[Segment], block: np.ndarray, rows: Sequence[int]) -> None:
        ids = [segment.object_id for segment in segments]
        get_many = getattr(self._prefetcher, "get_many", None)
        outcomes = get_many(ids) if get_many is not None else [self._get_one(object_id) for object_id in ids]
        # Frames as stored are decompressed here, in the writer's thread.
        outcomes = [payload_of(o) if type(o) is bytes else o for o in outcomes]
        layouts: list[PacketLayout] | None = None
        if all(type(outcome) is bytes for outcome in outcomes):  # the usual case: every payload is there
            layout_of = self._decoder.layout
            try:
                layouts = [layout_of(payload) for payload in outcomes]  # type: ignore[arg-type]
            except PacketError:
                layouts = None
        if layouts is None:  # missing or undecodable objects among them: one by one
            self._place_some(segments, block, rows, outcomes)
            return
        self._check_shapes(segments, layouts)
        stats = self._decoder.decode_into(
            outcomes,  # type: ignore[arg-type]
            layouts,
            [segment.first for segment in segments],
            [segment.stop for segment in segments],
            rows,
            block,
        )
        if self._quality is not None:
            self._quality.add_batch(stats, [layout.num_samples for layout in layouts])

    def _get_one(self, object_id: str) -> bytes | Exception:
        try:
            return self._prefetcher.get(object_id)
        except ObjectNotFound as exc:
            return exc

    def _check_shapes(self, segments: Sequence[Segment], layouts: Sequence[PacketLayout]) -> None:
        """ValueError, as ``placement.iter_recording`` raises it, for a packet
        whose payload does not hold the channels and samples its metadata says."""
        channels = self._num_channels
        first = layouts[0]
        if all(layout is first for layout in layouts) and len(first.channel_names) == channels:
            n = first.num_samples
            if all(segment.packet.num_samples == n for segment in segments):
                return
        for segment, layout in zip(segments, layouts, strict=True):
            if layout.num_samples != segment.packet.num_samples or len(layout.channel_names) != channels:
                shape = (len(layout.channel_names), layout.num_samples)
                expected = (channels, segment.packet.num_samples)
                raise ValueError(f"packet {segment.object_id} decodes to shape {shape}, expected {expected}")

    def _place_some(
        self, segments: Sequence[Segment], block: np.ndarray, rows: Sequence[int], outcomes: Sequence[bytes | Exception]
    ) -> None:
        """:meth:`place` when some objects are missing or undecodable: those
        become zeros and are listed; the others are decoded together."""
        kept: list[tuple[Segment, int, bytes, PacketLayout]] = []
        for segment, row, outcome in zip(segments, rows, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, ObjectNotFound):
                    raise outcome
                self.missing.append(segment.object_id)
                block[row : row + segment.samples] = 0
                continue
            try:
                layout = self._decoder.layout(outcome)
            except PacketError:
                self.undecodable.append(segment.object_id)
                block[row : row + segment.samples] = 0
                continue
            self._check_shapes([segment], [layout])
            kept.append((segment, row, outcome, layout))
        if not kept:
            return
        stats = self._decoder.decode_into(
            [payload for _, _, payload, _ in kept],
            [layout for _, _, _, layout in kept],
            [segment.first for segment, _, _, _ in kept],
            [segment.stop for segment, _, _, _ in kept],
            [row for _, row, _, _ in kept],
            block,
        )
        if self._quality is not None:
            self._quality.add_batch(stats, [layout.num_samples for _, _, _, layout in kept])

    def _zeros(self, object_id: str) -> np.ndarray:
        return np.zeros((self._num_channels, self._sizes[object_id]), dtype=np.int16)


async def write_session_prefetched(
    root: Path,
    spec: SessionSpec,
    packets: Sequence[Packet],
    events: Sequence[EventSpec],
    quality: _SessionQuality | None,
    power_line_frequency: float | None,
    *,
    fetch: Fetch,
    max_channels: int = 128,
    depth: int = PREFETCH_DEPTH,
) -> tuple[SessionResult, SessionSignals]:
    """``dataset.write_session`` in a worker thread, its packet objects
    fetched by ``fetch`` (a coroutine function of the object id, run on this
    loop) up to ``depth`` ahead of the writer and decoded in its thread."""
    order = await asyncio.to_thread(fetch_order, packets, spec.start_ms, spec.end_ms)
    prefetcher = PacketPrefetcher(asyncio.get_running_loop(), fetch, order, depth=depth)
    prefetcher.start(max(depth, BLOCK_PACKETS))  # the first block's objects, while the writer plans
    signals = SessionSignals(prefetcher, packets, len(spec.channel_names), quality, max_channels)
    try:
        result = await asyncio.to_thread(
            dataset.write_session,
            root,
            spec,
            packets,
            signals,
            events,
            quality if quality is not None else {},
            power_line_frequency,
        )
    finally:
        await prefetcher.aclose()
    return result, signals


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
    # Calibration items are shared by all experiments: only those the exported sessions showed.
    calibration = await db.fetch(
        """SELECT DISTINCT c.file_name, c.object_id FROM calibration_items c
           JOIN session_events e ON e.calibration_item_id = c.item_id
           WHERE e.session_id = ANY($1::text[]) ORDER BY c.file_name""",
        [s["session_id"] for s in sessions],
    )
    return {"experiment": experiment, "sessions": sessions, "stimuli": stimuli, "calibration": calibration}


async def _copy_stimuli(
    ctx: AppContext, root: Path, rows: Sequence[Any], folder: str | None
) -> tuple[dict[str, str], list[str]]:
    """Copy stimulus rows (``file_name``, ``object_id``) from the media bucket
    to ``stimuli/[<folder>/]``: the names they got when not their own, and
    the names whose object is missing (or that were never stored)."""
    bucket = ctx.settings.object_store.buckets.media
    items: list[tuple[str, bytes]] = []
    missing: list[str] = []
    renamed: dict[str, str] = {}
    for row in rows:
        name = dataset.exported_stimulus_name(row["file_name"])
        if name != row["file_name"]:
            renamed[row["file_name"]] = name
        try:
            if not row["object_id"]:
                raise ObjectNotFound(f"{row['file_name']} was never stored")
            items.append((name, await ctx.objects.get_bytes(bucket, row["object_id"])))
        except ObjectNotFound:
            missing.append(row["file_name"])
    if items:
        await asyncio.to_thread(dataset.write_stimuli, root, items, folder=folder)
    return renamed, missing


async def build_dataset(ctx: AppContext, experiment_id: uuid.UUID, root: Path, progress: Progress) -> dict[str, Any]:
    """Write the experiment's BIDS dataset into ``root``; return a report."""
    data = await _fetch_all(ctx, experiment_id)
    experiment, sessions = data["experiment"], data["sessions"]
    root.mkdir(parents=True, exist_ok=True)
    labels = LabelMap()
    users = sorted({s["user_id"] for s in sessions})
    for user in users:
        labels.assign("subject", user)
    per_subject: dict[str, int] = {}
    await progress(stage="writing dataset description", progress=8, sessions_total=len(sessions))
    bids = ctx.settings.export.bids
    described = metadata.dataset_fields(bids)
    await asyncio.to_thread(
        dataset.write_dataset_description,
        root,
        name=experiment["name"],
        authors=described.pop("Authors", ()),
        license=described.pop("License", None),
        extra=described,
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
    await asyncio.to_thread(dataset.write_bidsignore, root)
    await progress(stage="copying stimuli", progress=10)
    renamed, missing_stimuli = await _copy_stimuli(ctx, root, data["stimuli"], None)
    folder = dataset.CALIBRATION_STIMULI
    calibration_renamed, missing_calibration = await _copy_stimuli(ctx, root, data["calibration"], folder)
    report: dict[str, Any] = {
        "sessions": [],
        "skipped_sessions": [],
        "missing_stimuli": missing_stimuli,
        "renamed_stimuli": renamed,
        "calibration_stimuli": [f"{folder}/{calibration_renamed.get(r['file_name'], r['file_name'])}"
                                for r in data["calibration"] if r["file_name"] not in missing_calibration],
        "missing_calibration_stimuli": missing_calibration,
    }
    # An event's stim_file: the name it was exported under, relative to stimuli/.
    stim_paths = {
        "stimulus": renamed,
        "calibration": {r["file_name"]: f"{folder}/{calibration_renamed.get(r['file_name'], r['file_name'])}"
                        for r in data["calibration"]},
    }
    raw_bucket = ctx.settings.object_store.buckets.raw_data
    for index, session in enumerate(sessions):
        subject = labels.label("subject", session["user_id"])
        per_subject[subject] = per_subject.get(subject, 0) + 1
        session_label = labels.assign("session", session["session_id"], preferred=str(per_subject[subject]), scope=subject)
        task = labels.assign("task", session["session_type"] or "default")
        outcome = await _write_one(
            ctx, root, session, subject, session_label, task, raw_bucket, stim_paths, experiment["description"]
        )
        (report["sessions"] if "error" not in outcome else report["skipped_sessions"]).append(outcome)
        outcome["media"] = await _write_media(ctx, root, session, subject, session_label)
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
    report["left_for_the_lab"] = metadata.left_for_the_lab(
        bids,
        [s["session_type"] or "default" for s in sessions],
        experiment["description"],
        events=any(s.get("events_from_trigger") or s.get("events_from_log") or s.get("gaps") for s in report["sessions"]),
    )
    return report


async def _write_media(ctx: AppContext, root: Path, session: Any, subject: str, session_label: str) -> int:
    """Photos and audio linked to the session, under ``sourcedata/media`` with
    an index (``media.tsv``); BIDS has no place for them in the raw tree.
    Only files the session's own user uploaded; a file stored as the
    predecessor's app sent it (one zstd frame) is written decompressed."""
    rows = await ctx.database.fetch(
        """SELECT object_id, 'image' AS kind, timestamp_utc AS captured_at, content_type, original_filename
             FROM images WHERE session_id = $1 AND user_id = $2
           UNION ALL
           SELECT object_id, 'audio', start_time, content_type, original_filename FROM audio_clips
            WHERE session_id = $1 AND user_id = $2
           ORDER BY 3, 1""",
        session["session_id"],
        session["user_id"],
    )
    items = []
    bucket = ctx.settings.object_store.buckets.media
    for row in rows:
        try:
            data = await ctx.objects.get_bytes(bucket, row["object_id"])
        except ObjectNotFound:
            continue
        try:
            data = await asyncio.to_thread(unwrap_zstd, data, ctx.settings.ingest.max_media_bytes)
        except HttpError:
            log.warning("media object %s is a broken zstd frame; exported as stored", row["object_id"])
        name = row["object_id"].rsplit("/", 1)[-1]  # a safe key segment, unique per object
        items.append(
            dataset.MediaItem(
                media_id=row["object_id"],
                subject=subject,
                session=session_label,
                kind=row["kind"],
                file_name=name,
                source=data,
                captured_at=row["captured_at"],
                content_type=row["content_type"],
            )
        )
    if items:
        await asyncio.to_thread(dataset.write_sourcedata_media, root, items)
    return len(items)


async def _write_one(
    ctx: AppContext,
    root: Path,
    session: Any,
    subject: str,
    session_label: str,
    task: str,
    bucket: str,
    stim_paths: Mapping[str, Mapping[str, str]] | None = None,
    experiment_description: str | None = None,
) -> dict[str, Any]:
    """``stim_paths``: for the events' ``stim_file``, ``"stimulus"`` maps the
    experiment's stimuli exported under another name than their own
    (``dataset.exported_stimulus_name``), ``"calibration"`` every exported
    calibration item to its path under ``stimuli/``."""
    db = ctx.database
    sid = session["session_id"]
    renamed = (stim_paths or {}).get("stimulus", {})
    calibration_paths = (stim_paths or {}).get("calibration", {})
    objects = await db.fetch(
        """SELECT r.object_id, r.timestamp_start_ms, r.timestamp_end_ms, r.num_samples, r.sampling_rate,
                  r.lsb_to_volts, r.content_sha256, r.channel_names, r.channel_types,
                  r.segment_key, r.segment_offset, r.stored_bytes
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
    locations = {o["object_id"]: RawLocation.of(o) for o in usable}
    events = await db.fetch(
        """SELECT e.event_id, e.onset, e.duration, e.trial_type, e.value, e.onset_corrected_us,
                  s.file_name AS stimulus_file, c.file_name AS calibration_file
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
            stim_file=_stim_file(e, renamed, calibration_paths),
            event_id=e["event_id"],
        )
        for e in events
    ]
    total = sum(p.num_samples for p in packets)
    quality = _SessionQuality(names, types, total, total // max(1, len(packets)))
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
        eeg_reference=ctx.settings.export.bids.eeg_reference or "n/a",
        sidecar_extra=metadata.sidecar_fields(
            ctx.settings.export.bids, session["session_type"] or "default", experiment_description
        ),
        stimulus_presentation=ctx.settings.export.bids.stimulus_presentation or None,
    )
    # Neighbouring packets stored in one segment are read together.
    # Stored bytes: SessionSignals decompresses frames in the writer's thread.
    reader = RawReader(ctx.objects, bucket, [locations[p.object_id] for p in packets], decompress=False)
    try:
        result, signals = await write_session_prefetched(
            root,
            spec,
            packets,
            specs,
            quality,
            ctx.settings.export.power_line_frequency,
            fetch=reader.read,
            max_channels=ctx.settings.ingest.max_channels,
        )
    except Exception as exc:  # noqa: BLE001 - one bad session is reported, the rest exported
        log.warning("session %s not exported: %s", sid, exc)
        return {"session_id": sid, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        await reader.aclose()
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
        # The recording runs from the first to the last sample: the session's edges without data.
        "missing_before_first_sample_s": round(result.recording_start.timestamp() - spec.start_ms / 1000, 3),
        "missing_after_last_sample_s": round(
            spec.end_ms / 1000 - result.recording_start.timestamp() - result.samples / spec.sampling_rate, 3
        ),
        "events_from_trigger": result.events_from_trigger,
        "events_from_log": result.events_from_log,
        "events_not_placed": result.events_not_placed,
        "missing_stimuli": result.missing_stimuli,
        "undecodable_objects": signals.undecodable,
        "missing_objects": signals.missing,
        "inconsistent_objects": inconsistent,
    }


def _stim_file(event: Any, renamed: Mapping[str, str], calibration_paths: Mapping[str, str]) -> str | None:
    if event["stimulus_file"] is not None:
        return renamed.get(event["stimulus_file"], event["stimulus_file"])
    if event["calibration_file"] is not None:
        # Under calibration/ even when not exported: never an experiment stimulus of the same name.
        name = event["calibration_file"]
        return calibration_paths.get(name, f"{dataset.CALIBRATION_STIMULI}/{name}")
    return None


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
        summary, checked = await validate_dataset(ctx, root, f"export {job.task_id}")
        await progress(stage="compressing and uploading", progress=90, validation=checked)
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
        if summary is not None and summary.ok:
            await update_task(ctx, job.task_id, status="completed", **fields)
        else:
            why = (
                f"the BIDS validator found {summary.errors} error(s)"
                if summary is not None
                else f"the dataset could not be validated ({checked['validator_error']})"
            )
            await update_task(
                ctx, job.task_id, status="failed", error_message=f"{why}; the archive is kept for inspection"[:1000], **fields
            )
    except ExportError as exc:
        await update_task(ctx, job.task_id, status="failed", error_message=str(exc), finished_at=datetime.now(UTC))
    except asyncio.CancelledError:
        raise  # shut-down: the message is redelivered and the export restarts
    except Exception as exc:
        log.exception("export %s failed", job.task_id)
        await update_task(ctx, job.task_id, status="failed", error_message=f"{type(exc).__name__}: {exc}"[:1000],
                          finished_at=datetime.now(UTC))
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


VALIDATOR_HEALTH = "exporter.validator"
"""``ctx.services`` key of the exporter's :class:`validation.ValidatorHealth`."""


def validator_health(ctx: AppContext) -> validation.ValidatorHealth:
    health = ctx.services.get(VALIDATOR_HEALTH)
    if health is None:
        health = ctx.services[VALIDATOR_HEALTH] = validation.ValidatorHealth()
    return health  # type: ignore[no-any-return]


async def validate_dataset(ctx: AppContext, root: Path, what: str) -> tuple[validation.ValidationSummary | None, dict[str, Any]]:
    """Run the validator on ``root``: its summary and the task's ``validation``
    field. A validator that is missing or cannot run is logged, marks the
    exporter degraded in ``/api/v1/health`` and gives ``(None, {...,
    "validator_error": reason})``: the dataset is then unvalidated, not wrong."""
    health = validator_health(ctx)
    try:
        summary = await asyncio.to_thread(validation.validate, root, command=ctx.settings.export.validator)
    except validation.ValidatorUnavailable as exc:
        reason = str(exc)[:1000]
        log.error("%s: the BIDS validator could not run, the dataset is not validated: %s", what, reason)
        health.failed(reason)
        return None, {"errors": None, "warnings": None, "schema_version": None, "issues": [], "validator_error": reason}
    health.ran()
    return summary, summary.to_dict()


def make_handler(ctx: AppContext):  # type: ignore[no-untyped-def]
    async def handle(delivery: Delivery) -> None:
        try:
            job = msgspec.json.decode(delivery.message.body, type=Job)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise PermanentFailure(f"malformed export job: {exc}") from None
        # One process at a time builds a task. A redelivered job waits for
        # the process building it: then the task is completed and this
        # delivery ends at once, or that process stopped and its claim
        # expired, and this one builds the task again.
        started = time.monotonic()
        async with job_claim(ctx.database, "export", str(job.task_id)):
            await run_export(ctx, job)
        status = await ctx.database.fetchval("SELECT status FROM export_tasks WHERE task_id = $1", job.task_id)
        metrics_of(ctx).export_duration.labels(status or "unknown").observe(time.monotonic() - started)

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
    _, checked = await validate_dataset(ctx, target, f"internal build of {experiment_id}")
    return target, checked
