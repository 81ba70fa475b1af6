"""Stimulus and calibration item registration, listing and download."""
