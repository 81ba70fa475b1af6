-- Export tasks: who asked, where the ZIP is, how far it got, what the BIDS
-- validator said (spec §8 item 15).
ALTER TABLE export_tasks ADD COLUMN IF NOT EXISTS requested_by VARCHAR(255);
ALTER TABLE export_tasks ADD COLUMN IF NOT EXISTS stage VARCHAR(100);
ALTER TABLE export_tasks ADD COLUMN IF NOT EXISTS sessions_total INT NOT NULL DEFAULT 0;
ALTER TABLE export_tasks ADD COLUMN IF NOT EXISTS sessions_done INT NOT NULL DEFAULT 0;
ALTER TABLE export_tasks ADD COLUMN IF NOT EXISTS bytes_done BIGINT NOT NULL DEFAULT 0;
ALTER TABLE export_tasks ADD COLUMN IF NOT EXISTS size_bytes BIGINT;
ALTER TABLE export_tasks ADD COLUMN IF NOT EXISTS started_at TIMESTAMPTZ;
ALTER TABLE export_tasks ADD COLUMN IF NOT EXISTS finished_at TIMESTAMPTZ;
ALTER TABLE export_tasks ADD COLUMN IF NOT EXISTS validation JSONB;
ALTER TABLE export_tasks ADD COLUMN IF NOT EXISTS report JSONB;
