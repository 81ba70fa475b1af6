"""Two ``eeghub serve`` processes on one PostgreSQL, RabbitMQ and S3
(SeaweedFS), a small study sent to both alternately, one of them killed with
SIGKILL mid-stream (the study goes on, one packet per participant and round,
for as long as the checks of the live analysis need). Checked: every packet answered 202 is stored once; every
session is linked (each object to one session) and corrected; an export
finishes; analysis results of every stream are served by both processes
while both live; each stream is analysed by one process at a time (the
results published on the results exchange never alternate between them)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import msgspec
import pytest

from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice
from eeghub.plugins.analyzer.sharing import SharedResult, results_exchange
from tests.e2e.helpers import end_form, finished_task, start_export, user, wait_for
from tests.e2e.test_ingest_crash import free_port, start_server, wait_healthy

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3]

OWNER = "two-owner"
SUBJECTS = [f"two-subj-{n}" for n in range(4)]
MAX_PACKETS = 400  # one second each
FIRST_PART = 6
T0 = 1_751_000_000_000
RATE = 250.0


def iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


async def owned_partitions(base: str) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        detail = (await client.get("/api/v1/health")).json()["plugins"]["analyzer"]["detail"]
    return int(detail["partitions"]["partitions_owned"])


async def test_two_instances_one_killed_mid_stream(
    services_env: dict[str, str], database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    common = {
        **services_env,
        "EEGHUB_ANALYZER__INTERVAL_SECONDS": "0.3",
        "EEGHUB_ANALYZER__WINDOW_SECONDS": "2",
        "EEGHUB_ANALYZER__COHERENCE_WINDOW_SECONDS": "2",
        "EEGHUB_ANALYZER__LEASE_SECONDS": "4",
        "EEGHUB_ANALYZER__PARTITIONS": "16",
    }
    ports = {"a": free_port(), "b": free_port()}
    bases = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    procs = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        env = {**common, "EEGHUB_SERVER__DATA_DIR": str(tmp_path / name)}
        procs[name] = start_server(env, ports[name], tmp_path / f"{name}.log")

    # Every result either process publishes, in the order published.
    shared: list[SharedResult] = []
    amqp = await aio_pika.connect(rabbitmq_url)
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(
        results_exchange(services_env["EEGHUB_BROKER__QUEUES__RAW_DATA_EXCHANGE"]), aio_pika.ExchangeType.FANOUT, durable=True
    )
    watch = await channel.declare_queue(exclusive=True)
    await watch.bind(exchange)

    async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        shared.append(msgspec.json.decode(message.body, type=SharedResult))
        await message.ack()

    await watch.consume(collect)

    devices = {
        s: SimulatedDevice(user_id=s, device_id=f"{s}-dev", seed=n, sampling_rate=RATE, samples_per_packet=250,
                           trigger_samples=[int(RATE * (1.0 + 1.5 * k)) for k in range(7)])
        for n, s in enumerate(SUBJECTS)
    }
    accepted: dict[str, set[int]] = {s: set() for s in SUBJECTS}
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        await asyncio.gather(*(wait_healthy(base, procs[n], timeout=90) for n, base in bases.items()))
        # Both processes hold their share of the partitions before the study starts.
        async def split() -> bool:
            a, b = await owned_partitions(bases["a"]), await owned_partitions(bases["b"])
            return a > 0 and b > 0 and a + b == 16
        await wait_for(split, timeout=20, interval=0.2)

        clients.update({n: httpx.AsyncClient(base_url=b, timeout=10) for n, b in bases.items()})
        eid = (await clients["a"].post("/api/v1/experiments", json={"name": "Two instances"}, headers=user(OWNER))).json()["experiment_id"]
        for k, subject in enumerate(SUBJECTS):
            target = clients["ab"[k % 2]]
            assert (await target.post(f"/api/v1/auth/experiments/{eid}/join", json={}, headers=user(subject))).status_code == 201
            r = await target.post("/api/v1/sessions/start", headers=user(subject), json={
                "session_id": f"{subject}-s", "user_id": subject, "experiment_id": eid, "start_time": iso(T0),
                "session_type": "main_external"})
            assert r.status_code == 201, r.text

        alive = {"a", "b"}

        async def send(subject: str, i: int) -> None:
            device = devices[subject]
            body = {**device.envelope(i, T0), "payload_base64": base64.b64encode(compress_frame(device.payload(i))).decode()}
            for name in ("ab"[i % 2], "ba"[i % 2]):  # alternately; the other when one is down
                if name not in alive:
                    continue
                try:
                    r = await clients[name].post("/api/v1/data", json=body, headers=user(subject))
                except httpx.HTTPError:
                    continue  # died under this request: not acknowledged, send to the other
                if r.status_code == 202:
                    accepted[subject].add(i)
                    return
            raise AssertionError(f"packet {i} of {subject} was accepted by neither process")

        loop = asyncio.get_running_loop()
        sent = 0

        async def send_round() -> None:
            """One more packet of every participant, then a pause: the study
            goes on as long as the test needs (a lease may lapse on a busy
            machine, and a stream moves only while it streams)."""
            nonlocal sent
            i, sent = sent, sent + 1
            assert sent <= MAX_PACKETS, "the study ran out of packets"
            await asyncio.gather(*(send(s, i) for s in SUBJECTS), asyncio.sleep(0.3))

        # The first part of the study on both processes, until both serve
        # the results of every stream, whichever of them analyses it.
        missing: list[tuple[str, str, int]] = []

        async def served_everywhere() -> bool:
            missing.clear()
            for name, client in clients.items():
                for subject in SUBJECTS:
                    r = await client.get(f"/api/v1/users/{subject}/analysis?format=json", headers=user(subject))
                    if r.status_code != 200 or "psd" not in r.json()["results"]:
                        missing.append((name, subject, r.status_code))
            return not missing

        deadline = loop.time() + 60
        for _ in range(FIRST_PART):
            await send_round()
        while not await served_everywhere():
            assert loop.time() < deadline, f"results not served: {missing}"
            await send_round()
        assert {m.user_id for m in shared} == set(SUBJECTS)
        # Each process received (alternately) packets of streams the other
        # analyses and forwarded them to it, none lost (analyzer.source = "ingest").
        # (Both may not analyse: all four streams can fall to one process.)
        feeds = [(await c.get("/api/v1/health")).json()["plugins"]["analyzer"]["detail"]["feed"] for c in clients.values()]
        assert all(f["source"] == "ingest" and f["forward_dropped"] == 0 for f in feeds), feeds
        assert sum(f["forwarded"] for f in feeds) > 0 and sum(f["analysed_here"] for f in feeds) > 0, feeds

        # The process analysing the first subject's stream is killed (so at
        # least one stream must move); "a" names the survivor from here on.
        first = next(m.instance for m in shared if m.user_id == SUBJECTS[0])
        if f":{procs['a'].pid}:" in first:
            procs = {"a": procs["b"], "b": procs["a"]}
            clients = {"a": clients["b"], "b": clients["a"]}

        def instance_of_a() -> str | None:
            return next((m.instance for m in shared if f":{procs['a'].pid}:" in m.instance), None)

        async def all_on_a() -> bool:
            for subject in SUBJECTS:
                r = await clients["a"].get(f"/api/v1/users/{subject}/analysis?format=json", headers=user(subject))
                if r.status_code != 200 or r.json()["results"]["psd"]["instance"] != instance_of_a():
                    return False
            return True

        async def kill_b() -> None:
            await asyncio.sleep(0.05)
            os.kill(procs["b"].pid, signal.SIGKILL)
            await asyncio.to_thread(procs["b"].wait, 10)
            alive.discard("b")

        # The study goes on while b is killed, until a analyses every stream
        # (b's leases expired).
        await asyncio.gather(send_round(), kill_b())
        deadline = loop.time() + 60
        while not await all_on_a():
            assert loop.time() < deadline, "a did not take over b's streams"
            await send_round()
        packets = sent
        assert all(accepted[s] == set(range(packets)) for s in SUBJECTS)

        for subject in SUBJECTS:
            meta = {"session_id": f"{subject}-s", "user_id": subject, "device_id": f"{subject}-dev",
                    "end_time": iso(T0 + packets * 1000)}
            csv = "onset,duration,trial_type,file_name\n" + "".join(
                f"{(1.0 + 1.5 * k) - 0.05:.3f},0.5,target,n/a\n" for k in range(7))
            r = await clients["a"].post("/api/v1/sessions/end", headers=user(subject), **end_form(meta, csv.encode()))
            assert r.status_code == 200, r.text

        db = await asyncpg.connect(database_url)
        try:
            async def settled() -> bool:
                rows = await db.fetch("SELECT link_status, event_correction_status FROM sessions")
                return len(rows) == len(SUBJECTS) and all(
                    r["link_status"] == "completed" and r["event_correction_status"] == "completed" for r in rows)
            await wait_for(settled, timeout=60, interval=0.25)
            rows = await db.fetch("SELECT user_id, timestamp_start_ms, count(*) AS n FROM raw_data_objects GROUP BY 1, 2")
            stored = {(r["user_id"], r["timestamp_start_ms"]): r["n"] for r in rows}
            for subject in SUBJECTS:
                for i in accepted[subject]:
                    assert stored.get((subject, int(devices[subject].envelope(i, T0)["timestamp_start_ms"]))) == 1, (subject, i)
            assert len(stored) == len(SUBJECTS) * packets
            links = await db.fetch(
                "SELECT r.user_id, l.session_id, count(*) AS n FROM session_object_links l "
                "JOIN raw_data_objects r USING (object_id) GROUP BY 1, 2")
            assert {(r["user_id"], r["session_id"], r["n"]) for r in links} == {(s, f"{s}-s", packets) for s in SUBJECTS}
            reports = await db.fetch("SELECT session_id, report FROM session_correction_reports")
            assert len(reports) == len(SUBJECTS)
            for row in reports:
                report = row["report"] if isinstance(row["report"], dict) else msgspec.json.decode(row["report"])
                assert report["matched"] == 7, (row["session_id"], report.get("status"))
            assert await db.fetchval("SELECT count(*) FROM eeghub_job_claims") == 0
        finally:
            await db.close()

        status_url = await start_export(clients["a"], eid, OWNER)
        task = await finished_task(clients["a"], status_url, OWNER, timeout=120)
        assert task["status"] == "completed", task

        # The results of each stream never alternated between the processes.
        a_id = instance_of_a()
        for subject in SUBJECTS:
            sequence = [m.instance for m in shared if m.user_id == subject]
            runs = [x for k, x in enumerate(sequence) if k == 0 or sequence[k - 1] != x]
            assert runs in ([a_id], [runs[0], a_id]) and len(set(runs)) == len(runs), (subject, runs)
        moved = [s for s in SUBJECTS if len({m.instance for m in shared if m.user_id == s}) == 2]
        assert moved, "no stream was analysed by b before it was killed"
    finally:
        for client in clients.values():
            await client.aclose()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        await exchange.delete(if_unused=False)
        await amqp.close()


async def test_a_second_process_on_a_single_process_data_directory_is_refused(
    app_client: Any, database_url: str, tmp_path: Path
) -> None:
    # PostgreSQL is shared, but the object store (filesystem) and the broker
    # (in-process) keep their state in the data directory.
    env = {"EEGHUB_SERVER__DATA_DIR": str(tmp_path), "EEGHUB_DATABASE__URL": database_url}
    async with app_client(env) as (client, _):
        assert (await client.get("/health")).status_code == 200
        with pytest.raises(Exception) as refused:  # noqa: PT011 - the lifespan wraps the error
            async with app_client(env):
                pass
        text = repr(refused.value) + "".join(repr(e) for e in getattr(refused.value, "exceptions", ()))
        assert "filesystem object store" in text and "in-process broker" in text, text
        assert (await client.get("/health")).status_code == 200  # the first one is unharmed
    async with app_client(env) as (client, _):  # free again once the first stopped
        assert (await client.get("/health")).status_code == 200
