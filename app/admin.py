"""Administering a running server from its own machine.

``eeghub serve`` writes a fresh token to ``<data_dir>/admin-token`` (mode
0600) at every start and removes it when it stops. A command run on the same
machine by the same user (or root) reads it and calls the server's API over
loopback with the ``X-Eeghub-Admin-Token`` header; the server accepts that
header only from a loopback address and never through a proxy
(``core/auth.py``). So ``eeghub calibration add`` works while the server runs,
even on the embedded database that only one process may open.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from eeghub.config import Settings
from eeghub.core.auth import LOCAL_ADMIN_HEADER, read_admin_token
from eeghub.core.errors import EeghubError


class NoServer(EeghubError):
    """No server answers at the local URL (or it left no token)."""

    def __init__(self, message: str, *, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale
        """A token file was there, but no server answered."""


def local_url(settings: Settings) -> str:
    """The running server's address on this machine (loopback)."""
    host = settings.server.host
    if host in ("0.0.0.0", "", "localhost"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}"


def admin_request(settings: Settings, method: str, path: str, *, url: str | None = None, **kwargs: Any) -> httpx.Response:
    """One request to the running server as its local administrator;
    ``NoServer`` when there is no token or nothing answers."""
    from .bootstrap import data_dir

    token = read_admin_token(data_dir(settings))
    if token is None:
        raise NoServer(f"no {data_dir(settings) / 'admin-token'}: the server is not running (or auth.local_admin_token is off)")
    base = (url or local_url(settings)).rstrip("/")
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            return client.request(method, path, headers={LOCAL_ADMIN_HEADER: token}, **kwargs)
    except httpx.ConnectError as exc:
        raise NoServer(f"no server answers at {base} ({exc}); the token file is stale", stale=True) from None


def print_error(response: httpx.Response) -> int:
    try:
        message = response.json().get("error") or response.text
    except ValueError:
        message = response.text
    print(f"eeghub: the server answered {response.status_code}: {message}", file=sys.stderr)
    return 1


def add_calibration_over_http(settings: Settings, path: Path, *, item_type: str, description: str | None,
                              name: str | None, url: str | None) -> int:
    with path.open("rb") as handle:
        form = {"item_type": item_type, **({"description": description} if description else {})}
        response = admin_request(
            settings, "POST", "/api/v1/calibrations", url=url,
            files={"file": (name or path.name, handle)}, data=form,
        )
    if response.status_code != 201:
        return print_error(response)
    item = response.json()
    print(f"calibration item {item['item_id']}: {item['file_name']} ({item['item_type']}) - via the running server")
    return 0
