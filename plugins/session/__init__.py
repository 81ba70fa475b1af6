"""Experiments, participants, roles and recording sessions (the predecessor's session and auth managers)."""

from __future__ import annotations

from typing import Any

from eeghub.core.context import AppContext
from eeghub.core.hookspecs import hookimpl

from . import experiments, sessions


@hookimpl
def eeghub_routes(ctx: AppContext) -> list[Any]:
    return [*experiments.ROUTES, *sessions.ROUTES]
