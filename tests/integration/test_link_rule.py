"""Which session a packet belongs to (``core/ownership.py``), asked of a real
PostgreSQL: the rule the linker links by, and the late-packet triggers (the
storage consumer's statement, the linker's periodic check) relink by."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from eeghub.adapters.postgres.database import PostgresDatabase
from eeghub.adapters.postgres.migrate import migrate
from eeghub.core.ownership import PAD_MS, owned_by
from eeghub.plugins.linker.linking import OWNED

pytestmark = pytest.mark.postgres

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
BASE_MS = int(EPOCH.timestamp() * 1000)

CLAIMS = f"""
SELECT s.session_id FROM sessions s,
    (VALUES ('u-rule', $2::text, $3::bigint, $4::bigint)) AS p(user_id, device_id, timestamp_start_ms, timestamp_end_ms)
WHERE s.user_id = 'u-rule' AND s.end_time IS NOT NULL AND s.session_id = ANY($1::text[]) AND {owned_by("s", "p")}
ORDER BY s.session_id
"""


@pytest.fixture
async def ctx(database_url: str) -> AsyncIterator[Any]:
    await migrate(database_url)
    database = PostgresDatabase(database_url, max_size=2)
    await database.start()
    yield SimpleNamespace(database=database)
    await database.close()


async def sessions(ctx: Any, *rows: tuple[str, int, int | None, str | None]) -> list[str]:
    """(id, start ms, end ms or None while recording, device) from ``EPOCH``."""
    await ctx.database.execute("DELETE FROM sessions WHERE user_id = 'u-rule'")
    for sid, start, end, device in rows:
        await ctx.database.execute(
            "INSERT INTO sessions (session_id, user_id, device_id, start_time, end_time) VALUES ($1, 'u-rule', $2, $3, $4)",
            sid, device, EPOCH + timedelta(milliseconds=start),
            None if end is None else EPOCH + timedelta(milliseconds=end),
        )  # fmt: skip
    return [r[0] for r in rows]


async def claimed_by(ctx: Any, ids: list[str], start: int, end: int, device: str = "d") -> list[str]:
    return [r["session_id"] for r in await ctx.database.fetch(CLAIMS, ids, device, BASE_MS + start, BASE_MS + end)]


async def test_the_most_overlapped_then_the_nearest_then_the_earlier_session(ctx: Any) -> None:
    ids = await sessions(ctx, ("a", 0, 10_000, "d"), ("b", 10_500, 20_000, "d"))
    assert await claimed_by(ctx, ids, 9_000, 9_996) == ["a"]
    assert await claimed_by(ctx, ids, 10_000, 10_996) == ["b"]  # 496 ms in b, 0 in a
    assert await claimed_by(ctx, ids, 10_100, 10_400) == ["a"]  # equally near both: the earlier session
    assert await claimed_by(ctx, ids, 10_300, 10_450) == ["b"]  # in the gap, nearer to b
    assert await claimed_by(ctx, ids, -1_500, -600) == ["a"]  # padding before a
    assert await claimed_by(ctx, ids, 20_000 + PAD_MS, 20_000 + PAD_MS + 500) == ["b"]  # the edge of b's padding
    assert await claimed_by(ctx, ids, 20_001 + PAD_MS, 20_001 + PAD_MS + 500) == []  # beyond it
    assert await claimed_by(ctx, ids, 5_000, 5_996, device="other") == []  # another device's stream


async def test_a_packet_of_a_session_still_recording_is_no_ended_session_s(ctx: Any) -> None:
    """The next session has started and not ended: the packet at the
    boundary is its own, not a late packet of the one that ended there."""
    ids = await sessions(ctx, ("ended", 0, 10_000, "d"), ("recording", 10_000, None, "d"))
    assert await claimed_by(ctx, ids, 10_000, 10_996) == []
    assert await claimed_by(ctx, ids, 9_000, 9_996) == ["ended"]


async def test_sessions_without_a_device_compete_for_every_device(ctx: Any) -> None:
    ids = await sessions(ctx, ("any-device", 0, 10_000, None), ("d-session", 9_000, 20_000, "d"))
    assert await claimed_by(ctx, ids, 9_500, 10_496) == ["d-session"]  # 996 ms in d-session, 500 in any-device
    assert await claimed_by(ctx, ids, 9_500, 10_496, device="e") == ["any-device"]  # d-session cannot take it


def owner(layout: list[tuple[str, int, int | None, str | None]], start: int, end: int, now: int) -> str | None:
    """The rule as the docs state it, in Python: of the sessions that reach
    the packet, the one it overlaps most, then the earlier, then the
    greater id."""
    best: tuple[int, int, str] | None = None
    for sid, s_start, s_end, _ in layout:
        if end < s_start - PAD_MS or (s_end is not None and start > s_end + PAD_MS):
            continue
        claim = (min(end, now if s_end is None else s_end) - max(start, s_start), -s_start, sid)
        best = claim if best is None or claim > best else best
    return None if best is None else best[2]


async def test_random_layouts_follow_the_rule_and_no_packet_has_two_owners(ctx: Any) -> None:
    """Whatever the sessions' times (overlapping, adjacent, apart, still
    recording), a packet is claimed by the one session the rule names, and
    by no other: two sessions that both counted it as theirs would send
    each other back to linking. The linker's own query (its rivals looked
    up once per session) agrees."""
    rng = random.Random(7)
    now = int(datetime.now(UTC).timestamp() * 1000) - BASE_MS
    for case in range(150):
        layout = []
        for k in range(rng.randint(1, 4)):
            start = rng.choice([0, 10_000, 20_000]) + rng.randint(-3_000, 3_000)
            end = None if rng.random() < 0.2 else start + rng.randint(0, 12_000)
            layout.append((f"s{k}", start, end, rng.choice(["d", "d", None])))
        ids = await sessions(ctx, *layout)
        start = rng.randint(-4_000, 40_000)
        end = start + rng.choice([0, 996, 3_000])
        rule = owner(layout, start, end, now)
        ended = [sid for sid, _, s_end, _ in layout if s_end is not None]
        expected = [rule] if rule in ended else []
        assert await claimed_by(ctx, ids, start, end) == expected, (layout, start, end)
        await ctx.database.execute(
            """INSERT INTO raw_data_objects (object_id, user_id, device_id, timestamp_start_ms, timestamp_end_ms,
                                             sampling_rate, lsb_to_volts) VALUES ($1, 'u-rule', 'd', $2, $3, 250, 1e-6)""",
            f"o{case}", BASE_MS + start, BASE_MS + end,
        )  # fmt: skip
        linked = [sid for sid in ended if f"o{case}" in {r["object_id"] for r in await ctx.database.fetch(OWNED, sid)}]
        assert linked == expected, (layout, start, end)
        await ctx.database.execute("DELETE FROM raw_data_objects WHERE user_id = 'u-rule'")
