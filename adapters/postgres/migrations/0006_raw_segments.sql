-- Packets stored together: when the ingest route published several packets
-- in one message, the storage consumer writes their payloads one after the
-- other into a single segment object (one S3 PUT instead of one each).
-- object_id stays each packet's own deterministic, unique key (exactly-once
-- and the links are unchanged); segment_key and segment_offset say where its
-- stored_bytes bytes are. Both NULL: the packet is the object object_id, as
-- the predecessor stored every packet.
ALTER TABLE raw_data_objects ADD COLUMN IF NOT EXISTS segment_key VARCHAR(512);
ALTER TABLE raw_data_objects ADD COLUMN IF NOT EXISTS segment_offset BIGINT;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_raw_data_objects_segment') THEN
        ALTER TABLE raw_data_objects ADD CONSTRAINT chk_raw_data_objects_segment
            CHECK ((segment_key IS NULL AND segment_offset IS NULL)
                OR (segment_key IS NOT NULL AND segment_offset >= 0 AND stored_bytes IS NOT NULL));
    END IF;
END $$;
