"""Experiments, participants, roles and recording sessions (the predecessor's session and auth managers)."""
