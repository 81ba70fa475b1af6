-- Ingest, linking and event correction (spec §8 items 8, 11-14, 18).

-- What the storage consumer learns from each packet. The object key is
-- deterministic (envelope identity + content hash), so a redelivered packet
-- maps to the same row (ON CONFLICT DO NOTHING) and the same object.
ALTER TABLE raw_data_objects ADD COLUMN IF NOT EXISTS content_sha256 CHAR(64);
ALTER TABLE raw_data_objects ADD COLUMN IF NOT EXISTS num_samples INT;
ALTER TABLE raw_data_objects ADD COLUMN IF NOT EXISTS num_channels INT;
ALTER TABLE raw_data_objects ADD COLUMN IF NOT EXISTS channel_names TEXT[];
ALTER TABLE raw_data_objects ADD COLUMN IF NOT EXISTS channel_types TEXT[];
ALTER TABLE raw_data_objects ADD COLUMN IF NOT EXISTS payload_format VARCHAR(20);
ALTER TABLE raw_data_objects ADD COLUMN IF NOT EXISTS stored_bytes BIGINT;
-- The session id the phone put in the envelope (the predecessor dropped it).
-- No foreign key: packets may arrive before /sessions/start.
ALTER TABLE raw_data_objects ADD COLUMN IF NOT EXISTS envelope_session_id VARCHAR(255);
ALTER TABLE raw_data_objects ADD COLUMN IF NOT EXISTS received_at TIMESTAMPTZ NOT NULL DEFAULT NOW();

CREATE INDEX IF NOT EXISTS idx_raw_data_unlinked_user_time
    ON raw_data_objects(user_id, timestamp_start_ms) WHERE session_id IS NULL;

-- The correction report of each session (GET /api/v1/sessions/{id}/correction).
CREATE TABLE IF NOT EXISTS session_correction_reports (
    session_id VARCHAR(255) PRIMARY KEY REFERENCES sessions(session_id) ON DELETE CASCADE,
    report JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

ALTER TABLE sessions ADD COLUMN IF NOT EXISTS linked_at TIMESTAMPTZ;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS link_error TEXT;

-- Media keep what they are; keys no longer collide within a millisecond.
ALTER TABLE images ADD COLUMN IF NOT EXISTS content_type VARCHAR(255);
ALTER TABLE images ADD COLUMN IF NOT EXISTS size_bytes BIGINT;
ALTER TABLE images ADD COLUMN IF NOT EXISTS sha256 CHAR(64);
ALTER TABLE images ADD COLUMN IF NOT EXISTS original_filename VARCHAR(255);
ALTER TABLE audio_clips ADD COLUMN IF NOT EXISTS content_type VARCHAR(255);
ALTER TABLE audio_clips ADD COLUMN IF NOT EXISTS size_bytes BIGINT;
ALTER TABLE audio_clips ADD COLUMN IF NOT EXISTS sha256 CHAR(64);
ALTER TABLE audio_clips ADD COLUMN IF NOT EXISTS original_filename VARCHAR(255);
CREATE INDEX IF NOT EXISTS idx_images_user_time_session ON images(user_id, timestamp_utc) WHERE session_id IS NULL;
