"""Typed configuration. A leaf package: it imports nothing else from eeghub,
so the core, the plugins and the composition root may all read it."""

from .loader import ConfigError, load_settings, masked_dict, to_toml
from .settings import Settings

__all__ = ["ConfigError", "Settings", "load_settings", "masked_dict", "to_toml"]
