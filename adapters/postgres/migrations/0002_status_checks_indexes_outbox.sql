-- eeghub's first fixes to the predecessor schema (spec §8 item 30):
-- CHECK constraints on every status column, the indexes eeghub's queries use,
-- and the transactional outbox.
--
-- Constraints are added NOT VALID: they bind every new or updated row at once
-- but do not fail on rows an adopted predecessor database already holds.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_sessions_link_status') THEN
        ALTER TABLE sessions ADD CONSTRAINT chk_sessions_link_status
            CHECK (link_status IN ('pending', 'processing', 'completed', 'failed')) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_sessions_event_correction_status') THEN
        ALTER TABLE sessions ADD CONSTRAINT chk_sessions_event_correction_status
            CHECK (event_correction_status IN ('pending', 'processing', 'completed', 'failed')) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_sessions_session_type') THEN
        ALTER TABLE sessions ADD CONSTRAINT chk_sessions_session_type
            CHECK (session_type IS NULL OR session_type IN
                   ('main_integrated', 'main_external', 'main_task', 'calibration')) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_sessions_time_order') THEN
        ALTER TABLE sessions ADD CONSTRAINT chk_sessions_time_order
            CHECK (end_time IS NULL OR end_time >= start_time) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_export_tasks_status') THEN
        ALTER TABLE export_tasks ADD CONSTRAINT chk_export_tasks_status
            CHECK (status IN ('pending', 'processing', 'completed', 'failed')) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_export_tasks_progress') THEN
        ALTER TABLE export_tasks ADD CONSTRAINT chk_export_tasks_progress
            CHECK (progress BETWEEN 0 AND 100) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_erp_analysis_results_status') THEN
        ALTER TABLE erp_analysis_results ADD CONSTRAINT chk_erp_analysis_results_status
            CHECK (status IN ('pending', 'processing', 'completed', 'failed')) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_raw_data_objects_values') THEN
        ALTER TABLE raw_data_objects ADD CONSTRAINT chk_raw_data_objects_values
            CHECK (sampling_rate > 0 AND lsb_to_volts > 0 AND timestamp_end_ms >= timestamp_start_ms) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_session_events_duration') THEN
        ALTER TABLE session_events ADD CONSTRAINT chk_session_events_duration
            CHECK (duration >= 0) NOT VALID;
    END IF;
END
$$;

-- Linking looks objects up by user, device and time (spec §5.1, §8 item 13).
CREATE INDEX IF NOT EXISTS idx_raw_data_user_device_time
    ON raw_data_objects(user_id, device_id, timestamp_start_ms);
-- Listing an experiment's sessions in time order; a user's sessions by time.
CREATE INDEX IF NOT EXISTS idx_sessions_experiment_start ON sessions(experiment_id, start_time);
CREATE INDEX IF NOT EXISTS idx_sessions_user_start ON sessions(user_id, start_time);
-- Events of a session in onset order.
CREATE INDEX IF NOT EXISTS idx_session_events_session_onset ON session_events(session_id, onset);
-- "My experiments": memberships by user.
CREATE INDEX IF NOT EXISTS idx_participants_user ON experiment_participants(user_id);
-- An experiment's export tasks, newest first.
CREATE INDEX IF NOT EXISTS idx_export_tasks_experiment_created ON export_tasks(experiment_id, created_at DESC);
-- Media by session and time.
CREATE INDEX IF NOT EXISTS idx_images_user_time ON images(user_id, timestamp_utc);
CREATE INDEX IF NOT EXISTS idx_audio_clips_user_time ON audio_clips(user_id, start_time);

-- Transactional outbox: a message written in the same transaction as the
-- change it announces, published by the relay only after COMMIT, and
-- published even when the process dies between COMMIT and publish (spec §8
-- item 11).
CREATE TABLE IF NOT EXISTS eeghub_outbox (
    id BIGSERIAL PRIMARY KEY,
    target_kind VARCHAR(10) NOT NULL CHECK (target_kind IN ('queue', 'exchange')),
    target VARCHAR(255) NOT NULL,
    body BYTEA NOT NULL,
    headers JSONB NOT NULL DEFAULT '{}'::jsonb,
    content_type VARCHAR(255),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    published_at TIMESTAMPTZ,
    attempts INT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS idx_outbox_pending ON eeghub_outbox(id) WHERE published_at IS NULL;
