"""Which session a stored packet belongs to: the linker's rule, as SQL.

A raw object (a packet) of a user's device may touch several sessions:
adjacent sessions share the packet at their boundary, a session that has not
ended counts up to now, and a packet may lie in a session's padding
(``PAD_MS``: phone clocks jitter). Of the user's sessions that could link it
(its device, or no device recorded), it belongs to the one it overlaps most,
in milliseconds; the overlap is negative for a packet that lies only in the
padding, so then the nearest session wins. Ties go to the session that
started earlier, then to the greater session id (byte order). A session
that does not reach the packet (with its padding) never overlaps it more
than one that does, so one session at most is its owner.

The linker links a session's packets by this rule, and both places that send
an already linked session back to linking for a packet stored after its link
(the storage consumer's statement, ``plugins/ingest/store.py``, and the
linker's late-packet check) ask the same question in the same SQL: "would
the linker link this packet to this session?". A packet that belongs to
another session (the next one, one still being recorded) therefore never
sends a session back to linking, where it would only come out unchanged,
with its event correction to redo.

Everything is SQL text over aliases the caller names: ``session`` a row of
``sessions``, ``packet`` a row with ``user_id``, ``device_id``,
``timestamp_start_ms`` and ``timestamp_end_ms`` (a row of
``raw_data_objects``, or of rows being inserted). Times are compared in
whole milliseconds since the epoch, as packets carry them.
"""

from __future__ import annotations

PAD_MS = 2000
"""A packet may start or end this much outside the session (phone clocks jitter)."""


def epoch_ms(moment: str) -> str:
    """SQL: the timestamp expression ``moment`` in whole milliseconds (exact:
    ``extract`` gives a numeric, no float rounding)."""
    return f"floor(extract(epoch FROM {moment}) * 1000)::bigint"


def session_spans(where: str) -> str:
    """SQL query: the sessions matching ``where`` with their times in
    milliseconds, ``start_ms`` and ``end_ms`` (NULL while being recorded),
    computed once per session: the rivals of ``owned_by``."""
    return (
        f"SELECT session_id, user_id, device_id, {epoch_ms('start_time')} AS start_ms,"
        f" {epoch_ms('end_time')} AS end_ms FROM sessions WHERE {where}"
    )


def _times(session: str, spans: bool) -> tuple[str, str]:
    if spans:
        return f"{session}.start_ms", f"{session}.end_ms"
    return epoch_ms(f"{session}.start_time"), epoch_ms(f"{session}.end_time")


def in_reach(session: str, packet: str, *, spans: bool = False) -> str:
    """SQL condition: the session could link the packet: the same user, its
    device (or none recorded), and the packet touches the session or its
    padding. ``session`` is an ended session, or with ``spans`` a row of
    ``session_spans``, where a session being recorded reaches on."""
    start_ms, end_ms = _times(session, spans)
    until = f"{packet}.timestamp_start_ms <= {end_ms} + {PAD_MS}"
    return (
        f"{packet}.user_id = {session}.user_id"
        f" AND ({session}.device_id IS NULL OR {session}.device_id = {packet}.device_id)"
        f" AND {packet}.timestamp_end_ms >= {start_ms} - {PAD_MS}"
        f" AND {f'({end_ms} IS NULL OR {until})' if spans else until}"
    )


def _claim(session: str, packet: str, *, spans: bool = False) -> str:
    """SQL row value ordering the sessions' claims on the packet (the greatest wins)."""
    start_ms, end_ms = _times(session, spans)
    overlap = (
        f"least({packet}.timestamp_end_ms, COALESCE({end_ms}, {epoch_ms('now()')}))"
        f" - greatest({packet}.timestamp_start_ms, {start_ms})"
    )
    return f'({overlap}, -{start_ms}, {session}.session_id::text COLLATE "C")'


def owned_by(session: str, packet: str, rivals: str | None = None) -> str:
    """SQL condition: the linker links this packet to this (ended) session.

    ``rivals``: a relation of ``session_spans`` rows holding every session
    that reaches the packet (more do no harm); by default the user's
    sessions near the packet, looked up for each packet through the index
    on ``sessions(user_id, start_time)`` (about 0.1 ms for a user with 200
    sessions: for the few packets the late-packet triggers ask about). The
    linker, which asks about thousands at once, looks up the sessions around
    all of them once instead."""
    rival = f"{session}_rival"
    if rivals is None:  # a margin of 1 ms over the padding: the rule itself decides, in whole ms
        near = (
            f"user_id = {packet}.user_id"
            f" AND start_time <= to_timestamp(({packet}.timestamp_end_ms + {PAD_MS + 1}) / 1000.0)"
            f" AND COALESCE(end_time, 'infinity') >= to_timestamp(({packet}.timestamp_start_ms - {PAD_MS + 1}) / 1000.0)"
        )
        rivals = f"({session_spans(near)} OFFSET 0)"
    return f"""{in_reach(session, packet)} AND NOT EXISTS (
        SELECT 1 FROM {rivals} AS {rival}
        WHERE {rival}.session_id <> {session}.session_id AND {in_reach(rival, packet, spans=True)}
          AND {_claim(rival, packet, spans=True)} > {_claim(session, packet)})"""
