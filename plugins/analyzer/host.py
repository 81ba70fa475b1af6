"""The live analysis host: streams in, due analyses out, latest results kept.

- Packets arrive from the raw fanout exchange (an exclusive, length-bounded
  queue of this process) and are appended to their stream's ring buffer. A
  stream is (user, device); a change of channel layout or sampling rate, or a
  new session id, starts a new buffer for that stream (spec seed 004).
- Every ``tick`` the scheduler submits the analyses that are due for each
  stream with enough data. Each analysis plugin has its own small thread
  pool: a plugin that raises is logged and counted; a plugin that hangs only
  ties up its own threads (it is then skipped until they free up) and never
  the others, nor ingest, nor the event loop.
- Idle streams are evicted after ``idle_eviction_seconds``; at most
  ``max_streams`` are kept (the least recently seen goes first). Memory is
  bounded by design: buffer_seconds × rate × channels × 2 bytes per stream.
- The latest result per (stream, plugin) is kept with its time; listeners
  (server-sent events) are told of each new result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from eeghub.core.packet import PacketError

from .buffers import RingBuffer, StreamLayout
from .contract import AnalysisWindow

log = logging.getLogger("eeghub.analyzer")


class _Counters:
    """One packet's row of ``MultiplexedDecoder.decode_into``'s counters, as
    the ``PacketStats`` fields ``QualityWindow.update`` reads."""

    __slots__ = ("impedance_high", "impedance_unknown", "maximum", "minimum", "zero_count")

    def __init__(self, row: np.ndarray) -> None:
        self.zero_count, self.minimum, self.maximum, self.impedance_unknown, self.impedance_high = row

ANALYSIS_TYPES = ("eeg", "emg", "eog")


@dataclass
class Stream:
    user_id: str
    device_id: str
    session_id: str | None
    layout: StreamLayout
    buffer: RingBuffer
    lsb_to_volts: float
    quality: Any
    last_seen: float
    last_run: dict[str, float] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    pending: list[tuple[bytes, Any, int]] = field(default_factory=list)
    """Packets taken by ``add_payload`` and not yet decoded: (payload,
    layout, start µs), decoded together by ``AnalysisHost.flush``."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.user_id, self.device_id)


@dataclass
class Result:
    plugin_id: str
    user_id: str
    device_id: str
    session_id: str | None
    computed_at: float
    """Wall-clock seconds (epoch)."""
    window_start_us: int
    window_end_us: int
    value: Any
    """The plugin's msgspec result."""
    sequence: int
    images: dict[str, str] | None = None
    images_error: str | None = None
    """Why the plugin's ``render`` gave no images for this result (cached
    like the images: it is not called again for the same result)."""
    rendering: Any = None
    """The ``render`` call in flight, shared by concurrent requests."""
    instance: str | None = None
    """The process that computed it (results of other processes arrive on
    the results exchange; see ``partitions.py``)."""


@dataclass
class RemoteStream:
    """A stream analysed by another process: only what the results API
    shows of it."""

    user_id: str
    device_id: str
    session_id: str | None
    last_seen: float
    results: dict[str, Result] = field(default_factory=dict)


@dataclass
class PluginState:
    plugin: Any
    executor: ThreadPoolExecutor
    in_flight: int = 0
    runs: int = 0
    failures: int = 0
    timeouts: int = 0
    hung: int = 0
    """Runs past their timeout whose thread has not returned yet."""
    last_timeout_at: float | None = None
    total_seconds: float = 0.0
    last_error: str | None = None
    queue: deque[Stream] = field(default_factory=deque)
    """Streams due for this plugin, waiting for one of its ``capacity`` slots."""

    @property
    def capacity(self) -> int:
        """Runs in flight at most (bounded backlog: windows alive, queue wait)."""
        return self.executor._max_workers * 4  # noqa: SLF001


class AnalysisHost:
    def __init__(
        self,
        plugins: list[Any],
        *,
        buffer_seconds: float = 60.0,
        idle_eviction_seconds: float = 300.0,
        max_streams: int = 5000,
        threads_per_plugin: int = 2,
        quality_factory: Callable[[StreamLayout], Any] | None = None,
        plugin_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_run: Callable[[str, float], None] | None = None,
        pending_packets: int = 32,
        impedance_threshold: int = 200,
    ) -> None:
        self.pending_packets = max(1, pending_packets)
        """``add_payload`` decodes a stream's packets once this many wait."""
        self.impedance_threshold = impedance_threshold
        """Of the batch decoder (``add_payload``): the analyzer's ``bad_impedance_threshold``."""
        self._decoder: Any = None
        self.decode_failures = 0
        self.buffer_seconds = buffer_seconds
        self.idle_eviction_seconds = idle_eviction_seconds
        self.max_streams = max_streams
        self.plugin_timeout = plugin_timeout
        self.quality_factory = quality_factory
        self.clock = clock
        self.on_run = on_run
        """Called with (plugin id, seconds) after each successful run (metrics)."""
        self.streams: OrderedDict[tuple[str, str], Stream] = OrderedDict()
        self.results: dict[tuple[str, str], dict[str, Result]] = {}
        self.plugins: dict[str, PluginState] = {}
        self.listeners: dict[str, set[asyncio.Queue[Result]]] = {}
        self.remote: dict[tuple[str, str], RemoteStream] = {}
        self.instance: str | None = None
        self.on_result: Callable[[Result], None] | None = None
        """Told of each result computed here (to share it with the other processes)."""
        self.packets = 0
        self.skipped = 0
        """Packets of streams another process analyses."""
        self.evicted = 0
        self._sequence = 0
        self._closed = False
        for plugin in plugins:
            if plugin.id in self.plugins:
                raise ValueError(f"two analysis plugins share the id {plugin.id!r}")
            self.plugins[plugin.id] = PluginState(
                plugin=plugin,
                executor=ThreadPoolExecutor(max_workers=threads_per_plugin, thread_name_prefix=f"analysis-{plugin.id}"),
            )

    # ------------------------------------------------------------ ingest side
    def add_payload(
        self,
        *,
        user_id: str,
        device_id: str,
        session_id: str | None,
        sampling_rate: float,
        lsb_to_volts: float,
        layout: Any,
        payload: bytes,
        start_us: int,
    ) -> Stream:
        """Take a packet whose ``payload`` (decompressed, checked: ``layout``
        is its ``parse_layout``) is decoded later, with the stream's other
        pending packets, in one numba call (``flush``): when a window is
        built for an analysis, or once ``pending_packets`` have gathered.
        The same buffers and channel quality as ``add_packet`` of each packet
        in turn; per packet, a list append instead of a decode."""
        stream = self._stream_for(
            user_id, device_id, session_id, layout.channel_names, layout.channel_types, sampling_rate, lsb_to_volts
        )
        stream.pending.append((payload, layout, start_us))
        self.packets += 1
        if len(stream.pending) >= self.pending_packets:
            self.flush(stream)
        return stream

    def flush(self, stream: Stream) -> None:
        """Decode the stream's pending packets into its buffer and quality window."""
        pending = stream.pending
        if not pending:
            return
        stream.pending = []
        from eeghub.core.packet_batch import MultiplexedDecoder

        if self._decoder is None:
            self._decoder = MultiplexedDecoder(impedance_threshold=self.impedance_threshold)
        payloads = [p for p, _, _ in pending]
        layouts = [layout for _, layout, _ in pending]
        counts = [layout.num_samples for layout in layouts]
        rows = [0] * len(pending)
        total = 0
        for i, n in enumerate(counts):
            rows[i] = total
            total += n
        block = np.empty((total, len(stream.layout.channel_names)), dtype=np.int16)
        try:
            stats = self._decoder.decode_into(payloads, layouts, [0] * len(pending), counts, rows, block)
        except (ValueError, PacketError) as exc:
            # The route checked every packet: this is a bug or a layout the
            # batch decoder refuses. Live data: dropped, counted, logged.
            self.decode_failures += len(pending)
            log.warning("live analysis: %d packet(s) of %s/%s not decoded: %s", len(pending), stream.user_id, stream.device_id, exc)
            return
        rate = stream.layout.sampling_rate
        *_, (_, _, last_start) = pending
        stream.buffer.append(block.T, last_start + round((counts[-1] - 1) * 1e6 / rate))
        if stream.quality is not None:
            for i, n in enumerate(counts):
                stream.quality.update(_Counters(stats[i]), n)

    def _stream_for(
        self,
        user_id: str,
        device_id: str,
        session_id: str | None,
        channel_names: tuple[str, ...],
        channel_types: tuple[str, ...],
        sampling_rate: float,
        lsb_to_volts: float,
    ) -> Stream:
        """The stream a packet goes to: a new one (a new buffer) when the
        layout, the sampling rate or the session changes."""
        key = (user_id, device_id)
        stream = self.streams.get(key)
        now = self.clock()
        if (
            stream is None
            or stream.layout.channel_names != channel_names
            or stream.layout.channel_types != channel_types
            or stream.layout.sampling_rate != float(sampling_rate)
            or (session_id and session_id != stream.session_id)
        ):
            layout = StreamLayout(channel_names, channel_types, float(sampling_rate))
            capacity = max(1, int(round(self.buffer_seconds * sampling_rate)))
            stream = Stream(
                user_id=user_id,
                device_id=device_id,
                session_id=session_id,
                layout=layout,
                buffer=RingBuffer(layout, capacity),
                lsb_to_volts=lsb_to_volts,
                quality=self.quality_factory(layout) if self.quality_factory else None,
                last_seen=now,
            )
            self.streams[key] = stream
            self.results.pop(key, None)
            while len(self.streams) > self.max_streams:
                old, _ = self.streams.popitem(last=False)
                self.results.pop(old, None)
                self.evicted += 1
        else:
            self.streams.move_to_end(key)
        stream.last_seen = now
        stream.lsb_to_volts = lsb_to_volts
        return stream

    def add_packet(
        self,
        *,
        user_id: str,
        device_id: str,
        session_id: str | None,
        sampling_rate: float,
        lsb_to_volts: float,
        channel_names: tuple[str, ...],
        channel_types: tuple[str, ...],
        signals: np.ndarray,
        start_us: int,
        stats: Any = None,
    ) -> Stream:
        """Append a decoded packet to its stream (O(packet), no buffer copy)."""
        stream = self._stream_for(user_id, device_id, session_id, channel_names, channel_types, sampling_rate, lsb_to_volts)
        self.flush(stream)  # packets taken before this one come first
        n = signals.shape[1]
        stream.buffer.append(signals, start_us + round((n - 1) * 1e6 / sampling_rate))
        if stream.quality is not None and stats is not None:
            stream.quality.update(stats, n)
        self.packets += 1
        return stream

    def evict_idle(self) -> int:
        cutoff = self.clock() - self.idle_eviction_seconds
        stale = [k for k, s in self.streams.items() if s.last_seen < cutoff]
        for key in stale:
            del self.streams[key]
            self.results.pop(key, None)
        self.evicted += len(stale)
        for key in [k for k, r in self.remote.items() if r.last_seen < cutoff]:
            del self.remote[key]
        return len(stale)

    def drop_streams(self, predicate: Callable[[tuple[str, str]], bool]) -> int:
        """Forget the streams ``predicate`` picks (another process analyses
        them now); runs under way for them are discarded when they finish."""
        gone = [key for key in self.streams if predicate(key)]
        for key in gone:
            stream = self.streams.pop(key)
            results = self.results.pop(key, None)
            if results and key not in self.remote:
                # Still shown until the new owner's first results arrive.
                self.remote[key] = RemoteStream(
                    stream.user_id, stream.device_id, stream.session_id, self.clock(), dict(results)
                )
        return len(gone)

    def add_remote(self, result: Result) -> None:
        """A result another process computed: kept for the results API and
        passed to this process's listeners."""
        key = (result.user_id, result.device_id)
        remote = self.remote.get(key)
        if remote is None or remote.session_id != result.session_id:
            remote = self.remote[key] = RemoteStream(result.user_id, result.device_id, result.session_id, self.clock())
        previous = remote.results.get(result.plugin_id)
        if previous is not None and previous.instance == result.instance and previous.sequence >= result.sequence:
            return  # out of order
        remote.last_seen = self.clock()
        remote.results[result.plugin_id] = result
        self._tell(result)

    # ------------------------------------------------------------ analysis side
    def window_for(self, stream: Stream, plugin: Any) -> AnalysisWindow | None:
        self.flush(stream)
        layout = stream.layout
        n = int(round(plugin.window_seconds * layout.sampling_rate))
        minimum = getattr(plugin, "min_window_seconds", None)
        n_min = n if minimum is None else min(n, max(1, int(round(minimum * layout.sampling_rate))))
        if stream.buffer.available < n_min:
            return None
        n = min(n, stream.buffer.available)  # a growing window until the buffer holds a full one
        picks = [i for i, t in enumerate(layout.channel_types) if t in plugin.channel_types]
        if not picks:
            return None
        raw = stream.buffer.window(n)[picks]
        quality = stream.quality.report().as_dict() if stream.quality is not None else {}
        bad = tuple(sorted(quality.get("bad_channels", ()))) if isinstance(quality, dict) else ()
        end_us = stream.buffer.last_sample_us
        start_us = end_us - round((n - 1) * 1e6 / layout.sampling_rate)
        scale = np.array(
            [1.0 if layout.channel_types[i] == "stim" else stream.lsb_to_volts for i in picks], dtype=np.float64
        )
        return AnalysisWindow(
            user_id=stream.user_id,
            device_id=stream.device_id,
            session_id=stream.session_id,
            data=raw.astype(np.float64) * scale[:, None],
            channel_names=tuple(layout.channel_names[i] for i in picks),
            channel_types=tuple(layout.channel_types[i] for i in picks),
            sampling_rate=layout.sampling_rate,
            start_us=start_us,
            end_us=end_us,
            bad_channels=tuple(b for b in bad if b in {layout.channel_names[i] for i in picks}),
            channel_quality=quality.get("channels", {}) if isinstance(quality, dict) else {},
        )

    def due(self) -> list[tuple[Stream, PluginState]]:
        now = self.clock()
        work = []
        for stream in self.streams.values():
            for pid, state in self.plugins.items():
                if pid in stream.running:  # running or queued
                    continue
                if now - stream.last_run.get(pid, -1e18) < state.plugin.interval_seconds:
                    continue
                work.append((stream, state))
        return work

    async def run_due(self) -> int:
        """Queue every due analysis, start what each plugin's backlog allows;
        return how many were started. The rest start as runs finish."""
        for stream, state in self.due():
            stream.running.add(state.plugin.id)  # queued: not queued again
            state.queue.append(stream)
        return sum(self._fill(state) for state in self.plugins.values())

    def _fill(self, state: PluginState) -> int:
        """Submit queued streams while the plugin has a free slot; each
        window is built just before its run (bounded memory, fresh data)."""
        if self._closed:
            return 0
        loop = asyncio.get_running_loop()
        pid = state.plugin.id
        started = 0
        while state.queue and state.in_flight < state.capacity:
            stream = state.queue.popleft()
            window = self.window_for(stream, state.plugin) if self.streams.get(stream.key) is stream else None
            if window is None:
                stream.running.discard(pid)
                continue
            stream.last_run[pid] = self.clock()
            state.in_flight += 1
            future = loop.run_in_executor(state.executor, _timed, state.plugin.analyze, window)
            asyncio.ensure_future(self._collect(stream, state, window, future))
            started += 1
        return started

    async def _collect(self, stream: Stream, state: PluginState, window: AnalysisWindow, future: Any) -> None:
        pid = state.plugin.id
        try:
            value, seconds = await asyncio.wait_for(asyncio.shield(future), self.plugin_timeout)
        except TimeoutError:
            state.timeouts += 1
            state.hung += 1
            state.last_timeout_at = self.clock()
            state.last_error = f"timed out after {self.plugin_timeout} s"
            log.warning("analysis %s on %s/%s timed out", pid, stream.user_id, stream.device_id)

            def returned(_: Any) -> None:
                state.hung = max(0, state.hung - 1)
                self._release(stream, state)

            # The thread keeps running; the stream stays marked until it returns.
            future.add_done_callback(returned)
            return
        except Exception as exc:  # noqa: BLE001 - isolate a failing plugin
            state.failures += 1
            state.last_error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("analysis %s failed on %s/%s: %s", pid, stream.user_id, stream.device_id, state.last_error)
            self._release(stream, state)
            return
        self._release(stream, state)
        state.runs += 1
        state.total_seconds += seconds
        if self.on_run is not None:
            self.on_run(pid, seconds)
        if value is None or self.streams.get(stream.key) is not stream:
            return  # nothing to show, or the stream was reset meanwhile
        self._sequence += 1
        result = Result(
            plugin_id=pid,
            user_id=stream.user_id,
            device_id=stream.device_id,
            session_id=stream.session_id,
            computed_at=time.time(),
            window_start_us=window.start_us,
            window_end_us=window.end_us,
            value=value,
            sequence=self._sequence,
            instance=self.instance,
        )
        self.results.setdefault(stream.key, {})[pid] = result
        if self.on_result is not None:
            self.on_result(result)
        self._tell(result)

    def _tell(self, result: Result) -> None:
        for queue in list(self.listeners.get(result.user_id, ())):
            if queue.full():
                try:
                    queue.get_nowait()  # a slow listener loses the oldest event
                except asyncio.QueueEmpty:
                    pass
            queue.put_nowait(result)

    def _release(self, stream: Stream, state: PluginState) -> None:
        stream.running.discard(state.plugin.id)
        state.in_flight = max(0, state.in_flight - 1)
        self._fill(state)  # a slot is free: start the next queued stream

    # ------------------------------------------------------------ reading
    def results_for_user(self, user_id: str) -> list[tuple[Stream | RemoteStream, dict[str, Result]]]:
        """Each of the user's streams with its latest results (computed here
        or, for a stream another process analyses, received from it), the
        most recently computed first."""
        out: list[tuple[Stream | RemoteStream, dict[str, Result]]] = []
        for key, results in self.results.items():
            if key[0] == user_id and key in self.streams and results:
                out.append((self.streams[key], results))
        local = {stream.key for stream, _ in out}
        for key, remote in self.remote.items():
            if key[0] == user_id and key not in local and remote.results:
                out.append((remote, remote.results))
        out.sort(key=lambda item: max(r.computed_at for r in item[1].values()), reverse=True)
        return out

    def listen(self, user_id: str) -> asyncio.Queue[Result]:
        queue: asyncio.Queue[Result] = asyncio.Queue(maxsize=100)
        self.listeners.setdefault(user_id, set()).add(queue)
        return queue

    def unlisten(self, user_id: str, queue: asyncio.Queue[Result]) -> None:
        listeners = self.listeners.get(user_id)
        if listeners is not None:
            listeners.discard(queue)
            if not listeners:
                del self.listeners[user_id]

    async def render(self, result: Result) -> None:
        """Call the plugin's optional ``render`` for ``result`` once: on the
        plugin's own bounded thread pool (a hanging render ties up only its
        plugin's threads and shows in health like a hanging analysis),
        shared by concurrent requests, its images or its failure cached on
        the result."""
        state = self.plugins.get(result.plugin_id)
        render = getattr(state.plugin, "render", None) if state is not None else None
        if state is None or not callable(render) or result.images is not None or result.images_error is not None:
            return
        if result.rendering is None:
            info = {
                "plugin_id": result.plugin_id,
                "user_id": result.user_id,
                "device_id": result.device_id,
                "session_id": result.session_id,
                "window_start_us": result.window_start_us,
                "window_end_us": result.window_end_us,
            }
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(state.executor, render, result.value, info)
            result.rendering = asyncio.ensure_future(self._await_render(state, result, future))
        await asyncio.shield(result.rendering)

    async def _await_render(self, state: PluginState, result: Result, future: Any) -> None:
        try:
            images = await asyncio.wait_for(asyncio.shield(future), self.plugin_timeout)
            if not isinstance(images, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in images.items()
            ):
                raise TypeError(f"render must return a dict of str to base64 str, not {type(images).__name__}")
            result.images = images
        except TimeoutError:
            state.timeouts += 1
            state.hung += 1
            state.last_timeout_at = self.clock()
            state.last_error = f"render timed out after {self.plugin_timeout} s"
            result.images_error = f"render timed out after {self.plugin_timeout:g} s"

            def returned(_: Any) -> None:
                state.hung = max(0, state.hung - 1)

            future.add_done_callback(returned)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug is reported, not raised
            state.failures += 1
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            state.last_error = f"render: {text}"[:500]
            result.images_error = text[:300]
        finally:
            result.rendering = None

    HEALTH_WINDOW_SECONDS = 300.0
    """A timeout keeps the analyzer ``degraded`` this long after it happened."""

    def health(self) -> tuple[str, dict[str, Any]]:
        """``degraded`` while a plugin has a run stuck past its timeout or
        timed out within ``HEALTH_WINDOW_SECONDS``; ``ok`` again afterwards
        (a single slow window must not mark the service degraded forever)."""
        now = self.clock()
        troubled = {
            pid: f"{s.hung} run(s) past the {self.plugin_timeout:g} s timeout"
            if s.hung
            else f"timed out {now - s.last_timeout_at:.0f} s ago"
            for pid, s in self.plugins.items()
            if s.hung or (s.last_timeout_at is not None and now - s.last_timeout_at < self.HEALTH_WINDOW_SECONDS)
        }
        detail: dict[str, Any] = {"streams": len(self.streams), "packets": self.packets}
        if self.skipped:
            detail["packets_of_other_processes"] = self.skipped
        if troubled:
            detail["plugins"] = troubled
        return ("degraded" if troubled else "ok"), detail

    def stats(self) -> dict[str, Any]:
        return {
            "streams": len(self.streams),
            "remote_streams": len(self.remote),
            "packets": self.packets,
            "packets_of_other_processes": self.skipped,
            "evicted": self.evicted,
            "buffer_bytes": sum(s.buffer.nbytes for s in self.streams.values()),
            "plugins": {
                pid: {
                    "runs": s.runs,
                    "failures": s.failures,
                    "timeouts": s.timeouts,
                    "hung": s.hung,
                    "in_flight": s.in_flight,
                    "mean_ms": round(1000 * s.total_seconds / s.runs, 3) if s.runs else None,
                    "last_error": s.last_error,
                }
                for pid, s in self.plugins.items()
            },
        }

    def close(self) -> None:
        self._closed = True
        for state in self.plugins.values():
            state.queue.clear()
            state.executor.shutdown(wait=False, cancel_futures=True)


def _timed(function: Callable[[AnalysisWindow], Any], window: AnalysisWindow) -> tuple[Any, float]:
    started = time.perf_counter()
    value = function(window)
    if value is not None:
        # Fail here, as this plugin's failure, rather than later in every
        # results request and event stream of the user (numpy scalars and
        # arrays, for one, are not encodable).
        msgspec.to_builtins(value)
    return value, time.perf_counter() - started


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
