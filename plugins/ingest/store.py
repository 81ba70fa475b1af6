"""The storage consumer (``processing_queue``): every raw packet stored exactly once.

Object key: ``raw/{user}/{device}/start_ms={start}/end_ms={end}_{sha256[:16]}.bin``
(user and device made safe with ``key_segment``); the hash is of the
decompressed payload. The same packet delivered twice therefore maps to the
same key and the same ``raw_data_objects`` row (``ON CONFLICT DO NOTHING``).

Order: the object is written first, then the row. A crash between the two
leaves an object without a row, which the redelivery repairs (same key,
same bytes, then the row). A row never points at a missing object.

What is stored is the decompressed v4 payload, as the predecessor stored it,
so objects of an adopted predecessor deployment and new ones are read the
same way (the exporter and the corrector never need zstd), and a packet is
readable without the envelope. It costs about 3× the space of the zstd
frame; object storage for 8 channels at 250 Hz is ~20 MB per hour.

A packet that arrives after its session was linked (late data) marks that
session for linking again (see ``relink_if_late``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from eeghub.core.context import AppContext
from eeghub.core.errors import PermanentFailure
from eeghub.core.keys import key_segment
from eeghub.core.outbox import enqueue_json
from eeghub.core.packet import PacketError, decompress_frame, parse_layout
from eeghub.core.ports import Delivery

from .envelope import Envelope, from_amqp_headers

log = logging.getLogger("eeghub.ingest")

INLINE_DECOMPRESS_BYTES = 256 * 1024
"""Frames up to this size are decompressed on the event loop, larger ones in a thread."""

INSERT = """
INSERT INTO raw_data_objects (object_id, user_id, device_id, timestamp_start_ms, timestamp_end_ms, sampling_rate,
    lsb_to_volts, content_sha256, num_samples, num_channels, channel_names, channel_types, payload_format,
    stored_bytes, envelope_session_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (object_id) DO NOTHING
RETURNING object_id
"""


def object_key(envelope: Envelope, sha256: str) -> str:
    return (
        f"raw/{key_segment(envelope.user_id)}/{key_segment(envelope.device_id)}/"
        f"start_ms={envelope.timestamp_start_ms}/end_ms={envelope.timestamp_end_ms}_{sha256[:16]}.bin"
    )


async def relink_if_late(conn: Any, ctx: AppContext, envelope: Envelope) -> int:
    """Queue linking again for an ended session this packet belongs to that
    was already linked. Only a session whose status moves from completed or
    failed back to pending gets a job, so a burst of late packets costs one.
    Returns how many linking jobs were put in the outbox."""
    rows = await conn.fetch(
        """UPDATE sessions SET link_status = 'pending'
           WHERE user_id = $1 AND (device_id IS NULL OR device_id = $2)
             AND end_time IS NOT NULL AND link_status IN ('completed', 'failed')
             AND start_time <= to_timestamp($4 / 1000.0) AND end_time >= to_timestamp($3 / 1000.0)
           RETURNING session_id""",
        envelope.user_id,
        envelope.device_id,
        envelope.timestamp_start_ms,
        envelope.timestamp_end_ms,
    )
    for row in rows:
        await enqueue_json(conn, {"session_id": row["session_id"]}, queue=ctx.settings.broker.queues.data_linker_queue)
        log.info("late packet for session %s: linking again", row["session_id"])
    return len(rows)


def make_handler(ctx: AppContext):  # type: ignore[no-untyped-def]
    limits = ctx.settings.ingest

    async def handle(delivery: Delivery) -> None:
        message = delivery.message
        try:
            envelope = from_amqp_headers(message.headers)
        except ValueError as exc:
            raise PermanentFailure(f"bad envelope: {exc}") from None
        try:
            if message.content_encoding == "identity":
                payload = message.body
            elif len(message.body) <= INLINE_DECOMPRESS_BYTES:
                # A usual packet (a few KiB) decompresses in microseconds: a
                # thread hop would cost more than the work.
                payload = decompress_frame(message.body, max_output_size=limits.max_decompressed_bytes)
            else:
                payload = await asyncio.to_thread(
                    decompress_frame, message.body, max_output_size=limits.max_decompressed_bytes
                )
            layout = parse_layout(payload, max_channels=limits.max_channels)
        except PacketError as exc:
            raise PermanentFailure(f"bad packet: {exc}") from None
        sha256 = hashlib.sha256(payload).hexdigest()
        key = object_key(envelope, sha256)
        bucket = ctx.settings.object_store.buckets.raw_data
        # No HEAD first: the key is content-addressed, so writing it again on
        # a redelivery stores the same bytes; a HEAD on every packet would
        # cost a second S3 request for the rare redelivery.
        await ctx.objects.put_bytes(
            bucket,
            key,
            payload,
            content_type="application/octet-stream",
            metadata={
                "x-user-id": key_segment(envelope.user_id),
                "x-device-id": key_segment(envelope.device_id),
                "x-sampling-rate": repr(envelope.sampling_rate),
                "x-lsb-to-volts": repr(envelope.lsb_to_volts),
            },
        )
        async with ctx.database.transaction() as conn:
            inserted = await conn.fetchval(
                INSERT,
                key,
                envelope.user_id,
                envelope.device_id,
                envelope.timestamp_start_ms,
                envelope.timestamp_end_ms,
                envelope.sampling_rate,
                envelope.lsb_to_volts,
                sha256,
                layout.num_samples,
                len(layout.channel_names),
                list(layout.channel_names),
                list(layout.channel_types),
                "v4-trigger" if layout.has_trigger_block else "v4",
                len(payload),
                envelope.session_id,
            )
            relinks = await relink_if_late(conn, ctx, envelope) if inserted is not None else 0
        if relinks:
            # Only after a commit that enqueued something (see OutboxRelay): a
            # wake per stored packet would cost the relay a transaction each.
            ctx.outbox.wake()

    return handle
