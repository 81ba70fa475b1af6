"""eeghub: one process that collects, links, analyses and exports EEG research data."""

__version__ = "0.1.0"
