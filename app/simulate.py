"""``eeghub simulate``: stream synthetic packets to a server over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import base64
import time
from typing import Any

import httpx

from eeghub.config import Settings
from eeghub.core.simulator import SimulatedDevice


def _headers(settings: Settings, user: str) -> dict[str, str]:
    if settings.auth.mode == "jwt":
        from eeghub.core.auth import mint_token

        return {"Authorization": f"Bearer {mint_token(settings.auth, user)}"}
    return {settings.auth.user_header: user}


async def run_simulation(settings: Settings, args: argparse.Namespace) -> int:
    url = (args.url or f"http://{settings.server.host}:{settings.server.port}").rstrip("/")
    start_ms = args.start_ms if args.start_ms is not None else int(time.time() * 1000)
    devices = []
    for u in range(args.users):
        for d in range(args.devices):
            device = SimulatedDevice(
                user_id=f"{args.user_prefix}-{u + 1}",
                device_id=f"sim-device-{u + 1}-{d + 1}",
                channels=args.channels,
                sampling_rate=args.rate,
                samples_per_packet=args.samples_per_packet,
                variant=args.variant,
                seed=u * 1000 + d,
                session_id=args.session_id,
            )
            if args.trigger_every > 0:
                step = round(args.trigger_every * args.rate)
                total = round(args.seconds * args.rate)
                device.trigger_samples = list(range(step, total, step))
            devices.append(device)
    packets_per_device = max(1, round(args.seconds * args.rate / args.samples_per_packet))
    limit = asyncio.Semaphore(args.concurrency)
    counts: dict[str, int] = {}
    began = time.monotonic()

    async def send(client: httpx.AsyncClient, device: SimulatedDevice, index: int) -> None:
        envelope = device.envelope(index, start_ms)
        from eeghub.core.packet import compress_frame

        frame = compress_frame(device.payload(index))
        headers = _headers(settings, device.user_id)
        async with limit:
            if args.binary:
                params = {k: str(v) for k, v in envelope.items() if v is not None}
                response = await client.post(
                    "/api/v1/data", content=frame, params=params,
                    headers={**headers, "Content-Type": "application/octet-stream"},
                )
            else:
                body: dict[str, Any] = {**envelope, "payload_base64": base64.b64encode(frame).decode()}
                response = await client.post("/api/v1/data", json=body, headers=headers)
        counts[str(response.status_code)] = counts.get(str(response.status_code), 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        tasks: list[asyncio.Task[None]] = []
        for index in range(packets_per_device):
            if args.speed > 0:
                due = began + index * devices[0].packet_ms / 1000.0 / args.speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.extend(asyncio.create_task(send(client, device, index)) for device in devices)
        await asyncio.gather(*tasks)
    elapsed = time.monotonic() - began
    total = sum(counts.values())
    print(
        f"sent {total} packets from {len(devices)} device(s) in {elapsed:.2f} s "
        f"({total / elapsed:.0f}/s); responses: {dict(sorted(counts.items()))}"
    )
    return 0 if set(counts) <= {"202"} else 1
