-- Several eeghub processes on one database.
--
-- eeghub_job_claims: a job (link or correct a session, build an export) is
-- run by one process at a time. The runner inserts its claim, refreshes
-- heartbeat_at while it works and deletes the claim when done; a claim whose
-- heartbeat is older than the claim TTL belongs to a process that stopped and
-- may be taken over.
CREATE TABLE IF NOT EXISTS eeghub_job_claims (
    kind TEXT NOT NULL,
    job_key TEXT NOT NULL,
    owner TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (kind, job_key)
);

-- Live analysis partitions: each stream (user, device) hashes to one of a
-- fixed number of partitions; each partition has at most one owner whose
-- lease has not expired. Members announce themselves with a heartbeat; the
-- live members share the partitions by rendezvous hashing.
CREATE TABLE IF NOT EXISTS eeghub_analysis_members (
    instance TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS eeghub_analysis_leases (
    partition INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
