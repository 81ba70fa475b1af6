"""EEG packet and media ingest: validation, decoding and exactly-once storage."""
