"""Live per-stream analysis (PSD, alpha coherence, channel quality) and the analysis plugin API."""
