-- Stimuli keep every CSV column (spec §8 item 16: the predecessor dropped
-- item_name, brand_name, category, gender and anything else), their content
-- type, size and checksum; registration jobs are tracked so their progress
-- can be queried.

ALTER TABLE experiment_stimuli ADD COLUMN IF NOT EXISTS content_type VARCHAR(255);
ALTER TABLE experiment_stimuli ADD COLUMN IF NOT EXISTS size_bytes BIGINT;
ALTER TABLE experiment_stimuli ADD COLUMN IF NOT EXISTS sha256 CHAR(64);
ALTER TABLE experiment_stimuli ADD COLUMN IF NOT EXISTS extra JSONB NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE experiment_stimuli ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW();

ALTER TABLE calibration_items ADD COLUMN IF NOT EXISTS content_type VARCHAR(255);
ALTER TABLE calibration_items ADD COLUMN IF NOT EXISTS size_bytes BIGINT;
ALTER TABLE calibration_items ADD COLUMN IF NOT EXISTS sha256 CHAR(64);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_experiment_stimuli_type') THEN
        ALTER TABLE experiment_stimuli ADD CONSTRAINT chk_experiment_stimuli_type
            CHECK (stimulus_type IN ('image', 'audio', 'video', 'other')) NOT VALID;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS stimulus_jobs (
    job_id UUID PRIMARY KEY,
    experiment_id UUID NOT NULL REFERENCES experiments(experiment_id) ON DELETE CASCADE,
    requested_by VARCHAR(255) NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    total_files INT NOT NULL,
    processed_files INT NOT NULL DEFAULT 0,
    error_message TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_stimulus_jobs_experiment ON stimulus_jobs(experiment_id, created_at DESC);
