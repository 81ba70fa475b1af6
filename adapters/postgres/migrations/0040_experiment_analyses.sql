-- Experiment analyses run as jobs (the ERP neuro-marketing analysis first):
-- which analysis, how far it got, why it failed. The predecessor wrote only
-- completed rows; its readers select status = 'completed' and keep working.
ALTER TABLE erp_analysis_results ADD COLUMN IF NOT EXISTS kind VARCHAR(100) NOT NULL DEFAULT 'erp';
ALTER TABLE erp_analysis_results ADD COLUMN IF NOT EXISTS progress INT NOT NULL DEFAULT 0;
ALTER TABLE erp_analysis_results ADD COLUMN IF NOT EXISTS stage VARCHAR(200);
ALTER TABLE erp_analysis_results ADD COLUMN IF NOT EXISTS error_message TEXT;
ALTER TABLE erp_analysis_results ADD COLUMN IF NOT EXISTS started_at TIMESTAMPTZ;
ALTER TABLE erp_analysis_results ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW();
CREATE INDEX IF NOT EXISTS idx_erp_analysis_results_experiment
    ON erp_analysis_results (experiment_id, kind, status, analysis_id DESC);
