"""Live analysis partitioned among the eeghub processes of a deployment.

Every process receives the raw fanout (its own exclusive queue, as before),
but analyses only the streams it owns, and skips the others after reading
two headers (no decompression, no decoding). A stream (user, device) hashes
to one of ``analyzer.partitions`` partitions (CRC-32: the same in every
process); a partition is owned through a lease row in PostgreSQL:

- each process heartbeats in ``eeghub_analysis_members``; the processes
  seen within ``lease_seconds`` are the live ones, and they share the
  partitions by rendezvous hashing (a join or a leave moves only the
  partitions of that process);
- a process claims a partition it should own only when the lease is free
  or expired, and renews it every ``lease_seconds / 3``; it stops analysing
  a partition before giving its lease back, and treats a lease as lost once
  ``lease_seconds`` have passed since the refresh that renewed it began
  (the row's expiry is later than that), so two processes never analyse a
  stream at the same time;
- a process that stops cleanly deletes its member row and leases (the others
  take over at their next refresh); one that is killed loses its leases
  when they expire.

With the in-process broker there is one process: it owns every partition and
no lease is written.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from collections.abc import Callable, Iterable

from eeghub.core.ports import Database

log = logging.getLogger("eeghub.analyzer")


def partition_of(user_id: str, device_id: str, partitions: int) -> int:
    return zlib.crc32(f"{user_id}\x00{device_id}".encode()) % partitions


def rendezvous_owner(partition: int, members: Iterable[str]) -> str | None:
    """The member with the highest score for ``partition`` (highest random
    weight hashing: a member leaving moves only its own partitions)."""
    best: tuple[bytes, str] | None = None
    for member in members:
        score = hashlib.blake2b(f"{partition}:{member}".encode(), digest_size=8).digest()
        if best is None or (score, member) > best:
            best = (score, member)
    return best[1] if best else None


class PartitionLeases:
    def __init__(
        self,
        database: Database,
        instance: str,
        *,
        partitions: int,
        lease_seconds: float,
        on_lost: Callable[[set[int]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.instance = instance
        self.partitions = partitions
        self.lease_seconds = lease_seconds
        self.on_lost = on_lost
        self.clock = clock
        self.owned: frozenset[int] = frozenset()
        self.valid_until = 0.0
        self.members: list[str] = []
        self.refreshes = 0
        self._owners: tuple[list[str], dict[int, str | None]] | None = None

    def owns(self, partition: int) -> bool:
        return partition in self.owned and self.clock() < self.valid_until

    def owns_stream(self, user_id: str, device_id: str) -> bool:
        return self.owns(partition_of(user_id, device_id, self.partitions))

    def owner_of_stream(self, user_id: str, device_id: str) -> str | None:
        """The live process that should analyse this stream (rendezvous
        hashing over the members seen at the last refresh; None before the
        first). It may not hold the lease yet: a packet sent to it then is
        dropped there, as live data may be."""
        partition = partition_of(user_id, device_id, self.partitions)
        owners = self._owners
        if owners is None or owners[0] != self.members:
            owners = self._owners = (self.members, {})
        owner = owners[1].get(partition)
        if owner is None and self.members:
            owner = owners[1][partition] = rendezvous_owner(partition, self.members)
        return owner

    def _set_owned(self, owned: frozenset[int]) -> None:
        lost = set(self.owned - owned)
        if owned != self.owned:
            log.info(
                "analysis partitions: %s owns %d of %d (%d live process(es))",
                self.instance, len(owned), self.partitions, len(self.members),
            )
        self.owned = owned
        if lost and self.on_lost is not None:
            self.on_lost(lost)

    async def refresh(self) -> frozenset[int]:
        """Heartbeat, give back what another live process should own, claim
        or renew what this one should; return the partitions owned now."""
        started = self.clock()
        if started >= self.valid_until:
            self._set_owned(frozenset())  # a lease not renewed in time is lost
        lease = self.lease_seconds
        async with self.database.transaction() as conn:
            await conn.execute(
                """INSERT INTO eeghub_analysis_members (instance) VALUES ($1)
                   ON CONFLICT (instance) DO UPDATE SET heartbeat_at = NOW()""",
                self.instance,
            )
            await conn.execute(
                "DELETE FROM eeghub_analysis_members WHERE heartbeat_at < NOW() - make_interval(secs => $1)",
                lease * 6,
            )
            self.members = sorted(
                r["instance"]
                for r in await conn.fetch(
                    "SELECT instance FROM eeghub_analysis_members WHERE heartbeat_at >= NOW() - make_interval(secs => $1)",
                    lease,
                )
            )
        wanted = [p for p in range(self.partitions) if rendezvous_owner(p, self.members) == self.instance]
        # Stop analysing what moves away before its lease is given back.
        self._set_owned(self.owned & frozenset(wanted))
        async with self.database.transaction() as conn:
            await conn.execute(
                "DELETE FROM eeghub_analysis_leases WHERE owner = $1 AND NOT (partition = ANY($2::int[]))",
                self.instance,
                wanted,
            )
            rows = await conn.fetch(
                """INSERT INTO eeghub_analysis_leases AS l (partition, owner, expires_at)
                   SELECT unnest($1::int[]), $2, NOW() + make_interval(secs => $3)
                   ON CONFLICT (partition) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
                       WHERE l.owner = EXCLUDED.owner OR l.expires_at < NOW()
                   RETURNING partition""",
                wanted,
                self.instance,
                lease,
            )
        self.valid_until = started + lease
        self._set_owned(frozenset(r["partition"] for r in rows))
        self.refreshes += 1
        return self.owned

    async def leave(self) -> None:
        """Stop owning anything and tell the others at once."""
        self._set_owned(frozenset())
        self.valid_until = 0.0
        async with self.database.transaction() as conn:
            await conn.execute("DELETE FROM eeghub_analysis_leases WHERE owner = $1", self.instance)
            await conn.execute("DELETE FROM eeghub_analysis_members WHERE instance = $1", self.instance)

    def status(self) -> dict[str, object]:
        return {
            "instance": self.instance,
            "members": len(self.members),
            "partitions_owned": len(self.owned) if self.clock() < self.valid_until else 0,
            "partitions": self.partitions,
        }
