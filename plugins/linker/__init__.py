"""Linking of raw data to sessions by time, and event onset correction from triggers."""
