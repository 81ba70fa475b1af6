"""Results of one process's analyses shown by the others (plugins/analyzer/sharing.py)."""

from __future__ import annotations

import asyncio

import msgspec
import numpy as np

from eeghub.core.ports import Delivery, Message
from eeghub.plugins.analyzer.host import AnalysisHost
from eeghub.plugins.analyzer.partitions import partition_of
from eeghub.plugins.analyzer.sharing import ResultSharing
from tests.fakes import FakeBroker


class Power(msgspec.Struct):
    value: float
    channels: list[str]


class PowerAnalysis:
    id = display_name = description = "power"
    window_seconds = 1.0
    interval_seconds = 0.0
    channel_types = ("eeg",)

    def analyze(self, window) -> Power:  # type: ignore[no-untyped-def]
        return Power(value=float(np.mean(window.data**2)), channels=list(window.channel_names))


def feed(host: AnalysisHost, user: str, device: str) -> None:
    host.add_packet(
        user_id=user, device_id=device, session_id="s1", sampling_rate=100.0, lsb_to_volts=1e-6,
        channel_names=("C3", "C4"), channel_types=("eeg", "eeg"),
        signals=np.full((2, 100), 3, dtype=np.int16), start_us=1_000_000,
    )


async def test_a_result_reaches_the_other_process_typed_and_named() -> None:
    broker = FakeBroker()
    exchange = "raw.analysis_results"
    hosts = {name: AnalysisHost([PowerAnalysis()]) for name in ("a", "b")}
    sharings = {}
    for name, host in hosts.items():
        host.instance = f"proc-{name}"
        sharings[name] = ResultSharing(broker, host, exchange)
        host.on_result = sharings[name].offer
        await broker.declare_queue(f"results-{name}", bind_to=exchange)
        await broker.consume(f"results-{name}", sharings[name].receive)
    publisher = asyncio.create_task(sharings["a"].run())
    listener = hosts["b"].listen("u1")
    try:
        feed(hosts["a"], "u1", "d1")
        await hosts["a"].run_due()
        seen = await asyncio.wait_for(listener.get(), 5)
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
        for host in hosts.values():
            host.close()
    assert seen.instance == "proc-a" and isinstance(seen.value, Power)
    assert seen.value == hosts["a"].results[("u1", "d1")]["power"].value
    [(stream, results)] = hosts["b"].results_for_user("u1")
    assert (stream.device_id, stream.session_id) == ("d1", "s1") and results["power"] is seen
    assert sharings["a"].received == 0  # its own result, skipped by its header
    assert sharings["b"].received == 1


async def test_streams_of_lost_partitions_are_dropped_and_their_last_results_still_shown() -> None:
    host = AnalysisHost([PowerAnalysis()])
    try:
        for user in ("u1", "u2", "u3", "u4"):
            feed(host, user, "d")
        await host.run_due()
        for _ in range(100):
            if len(host.results) == 4:
                break
            await asyncio.sleep(0.01)
        before = host.results[("u1", "d")]["power"]
        lost = {partition_of("u1", "d", 4)}
        host.drop_streams(lambda key: partition_of(*key, 4) in lost)
        assert all(partition_of(*key, 4) not in lost for key in host.streams)
        assert ("u1", "d") not in host.streams
        [(stream, results)] = host.results_for_user("u1")
        assert stream.device_id == "d" and results["power"] is before
    finally:
        host.close()


def test_an_older_result_does_not_replace_a_newer_one() -> None:
    host = AnalysisHost([PowerAnalysis()])
    sharing = ResultSharing(FakeBroker(), host, "x")
    try:
        def shared(sequence: int, value: float) -> bytes:
            return msgspec.json.encode({
                "instance": "proc-a", "plugin_id": "power", "user_id": "u", "device_id": "d", "session_id": None,
                "computed_at": 1.0, "window_start_us": 0, "window_end_us": 1, "sequence": sequence,
                "value": {"value": value, "channels": ["C3"]},
            })

        for sequence, value in ((2, 2.0), (1, 1.0)):
            asyncio.run(sharing.receive(Delivery(message=Message(body=shared(sequence, value)), queue="q")))
        [(_, results)] = host.results_for_user("u")
        assert results["power"].value == Power(value=2.0, channels=["C3"])
    finally:
        host.close()

