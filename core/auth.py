"""Identity and experiment roles, shared by every plugin.

Three identity modes (``[auth] mode``, see ``docs/identity.md``):

- ``compat`` (the default, the predecessor's behaviour): the ``X-User-Id``
  header where it is sent; without it, and on exactly the calls where the
  predecessor took the caller from the request (``claimed_identity``), the
  user id the request names (join body, data envelope, media form, analysis
  path) or, for an export task, the task id itself.
- ``trusted-header``: the ``X-User-Id`` header on every call. Only safe behind
  a gateway that authenticates users and always sets that header.
- ``jwt``: ``Authorization: Bearer <token>``, verified with HS256 and a shared
  secret, or RS256/ES256 with a PEM public key or a JWKS file. The user id is
  the ``sub`` claim; ``exp`` is required and enforced. Downloads a browser
  opens carry a short-lived signed link instead (``LinkSigner``).

``eeghub serve`` warns when ``compat`` or ``trusted-header`` listens on a
non-loopback address: both take the caller's word for who it is.

Roles come from ``experiment_participants``: ``owner`` or ``participant``
(an owner may do everything a participant may). Route handlers declare what
they need with ``require_user`` / ``require_role`` (Litestar dependencies) so
authorization is visible at the route.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from eeghub.config.settings import AuthSettings

from .errors import BadRequest, ConfigurationError, Forbidden, NotFound, Unauthorized
from .ports import Database

Role = Literal["owner", "participant"]


@dataclass(frozen=True)
class Identity:
    user_id: str
    claims: dict[str, Any] = field(default_factory=dict)
    local_admin: bool = False
    """Set only by the local administrator token, never from a token's claims
    (an identity provider may let users put any claim into their token)."""


MISSING_IDENTITY = "Unauthorized: X-User-Id header is required."
HEADER_MODES = ("compat", "trusted-header")
"""Modes whose identity is the ``X-User-Id`` header."""


def valid_user_id(value: str) -> bool:
    """The rule for every user id: it goes into VARCHAR(255) columns, and
    PostgreSQL text cannot hold NUL."""
    return bool(value) and len(value) <= 255 and not any(ord(c) < 32 for c in value)

LOCAL_ADMIN_HEADER = "X-Eeghub-Admin-Token"
LOCAL_ADMIN_USER = "eeghub-admin"
"""The user id of a request carrying the local administrator token."""
ADMIN_TOKEN_FILE = "admin-token"
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def write_admin_token(data_dir: Path) -> str:
    """A fresh local administrator token in ``<data_dir>/admin-token``,
    readable by its owner only (created 0600, then renamed into place)."""
    token = secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / ADMIN_TOKEN_FILE
    temporary = data_dir / f".{ADMIN_TOKEN_FILE}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, target)
    return token


def remove_admin_token(data_dir: Path, token: str) -> None:
    """Remove the token file if it still holds ``token`` (not a newer server's)."""
    target = data_dir / ADMIN_TOKEN_FILE
    try:
        if target.read_text().strip() == token:
            target.unlink()
    except OSError:
        pass


def read_admin_token(data_dir: Path) -> str | None:
    try:
        return (data_dir / ADMIN_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_admin(identity: Identity, settings: AuthSettings) -> bool:
    """An administrator: listed in ``auth.admin_users``, or the local administrator token."""
    return identity.local_admin or identity.user_id in settings.admin_users


class Authenticator:
    """Turns request headers into an ``Identity``."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.mode = settings.mode
        self._key: Any = None
        self._jwks: Any = None
        self.links: LinkSigner | None = None
        """Signed download links; only ``jwt`` mode hands them out."""
        if self.mode == "jwt":
            self._load_keys()
            self.links = LinkSigner(settings)

    def _load_keys(self) -> None:
        import jwt

        s = self.settings
        if s.jwks_file:
            try:
                self._jwks = jwt.PyJWKSet.from_dict(json.loads(Path(s.jwks_file).read_text()))
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise ConfigurationError(f"auth.jwks_file {s.jwks_file}: {exc}") from exc
        elif s.jwt_public_key_file:
            try:
                self._key = Path(s.jwt_public_key_file).read_text()
            except OSError as exc:
                raise ConfigurationError(f"auth.jwt_public_key_file {s.jwt_public_key_file}: {exc}") from exc
        elif s.jwt_secret:
            if len(s.jwt_secret) < 32:
                raise ConfigurationError("auth.jwt_secret must be at least 32 characters")
            self._key = s.jwt_secret
        else:  # pragma: no cover - the loader already refuses this
            raise ConfigurationError("auth.mode = 'jwt' needs a key")

    def identify(self, headers: Any) -> Identity | None:
        """The caller's identity, None when the request carries none, or
        ``Unauthorized`` when it carries an invalid one."""
        if self.mode in HEADER_MODES:
            value = headers.get(self.settings.user_header)
            if value is None:
                return None
            value = value.strip()
            if not valid_user_id(value):
                raise Unauthorized(f"invalid {self.settings.user_header} header")
            return Identity(user_id=value)
        authorization = headers.get("authorization")
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization header must be 'Bearer <token>'")
        return self.verify(token.strip())

    def verify(self, token: str) -> Identity:
        import jwt

        s = self.settings
        try:
            key = self._key
            if self._jwks is not None:
                kid = jwt.get_unverified_header(token).get("kid")
                matches = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
                if not matches:
                    raise Unauthorized("token signed with an unknown key")
                key = matches[0].key
            claims = jwt.decode(
                token,
                key,
                algorithms=s.jwt_algorithms,
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway_seconds,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token has expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not valid_user_id(subject):
            raise Unauthorized("token has no usable 'sub' claim")
        return Identity(user_id=subject, claims=claims)


class LinkSigner:
    """Short-lived signed download links (``jwt`` mode): a browser opening a
    download cannot send a bearer token, so the route that lists the file
    hands out ``<path>?expires=<unix time>&signature=<HMAC-SHA256>``. The MAC
    covers the exact path (the task id or the experiment and file name), so a
    link opens that one file until it expires and nothing else; it carries no
    standing credential. The key is ``auth.link_secret``, else derived from
    ``auth.jwt_secret``, else random per process (links then die with it)."""

    def __init__(self, settings: AuthSettings) -> None:
        self.ttl_seconds = settings.link_ttl_seconds
        if settings.link_secret:
            self._key = settings.link_secret.encode()
        elif settings.jwt_secret:
            self._key = hmac.new(settings.jwt_secret.encode(), b"eeghub download links", hashlib.sha256).digest()
        else:
            self._key = secrets.token_bytes(32)

    def _mac(self, path: str, expires: int) -> str:
        return hmac.new(self._key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, path: str, *, now: float | None = None) -> str:
        """The link to ``path`` (unquoted, as the server sees it)."""
        expires = int(now if now is not None else time.time()) + self.ttl_seconds
        return f"{quote(path)}?expires={expires}&signature={self._mac(path, expires)}"

    def verify(self, path: str, query: Any, *, now: float | None = None) -> bool:
        """True when ``query`` holds a valid, unexpired signature for ``path``."""
        expires_text, signature = query.get("expires"), query.get("signature")
        if not expires_text or not signature or not str(expires_text).isdigit() or len(str(expires_text)) > 12:
            return False
        expires = int(expires_text)
        if expires < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(self._mac(path, expires), str(signature))


def mint_token(settings: AuthSettings, user_id: str, *, ttl_seconds: int = 3600, extra: dict[str, Any] | None = None) -> str:
    """A development token signed with ``auth.jwt_secret`` (``eeghub token``)."""
    import jwt

    if not settings.jwt_secret:
        raise ConfigurationError("eeghub token needs auth.jwt_secret (EEGHUB_AUTH__JWT_SECRET)")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_seconds, **(extra or {})}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    algorithm = next((a for a in settings.jwt_algorithms if a.startswith("HS")), "HS256")
    return jwt.encode(claims, settings.jwt_secret, algorithm=algorithm)


def parse_experiment_id(value: str) -> uuid.UUID:
    """A UUID, or 400 naming the field (the predecessor answered 500/503)."""
    try:
        return uuid.UUID(str(value))
    except (ValueError, AttributeError, TypeError):
        raise BadRequest(f"experiment_id must be a UUID, got {str(value)[:80]!r}") from None


async def experiment_role(database: Database, experiment_id: uuid.UUID, user_id: str) -> Role | None:
    """The user's role in an existing experiment; raises 404 if there is no such experiment."""
    row = await database.fetchrow(
        """SELECT e.experiment_id, p.role FROM experiments e
           LEFT JOIN experiment_participants p ON p.experiment_id = e.experiment_id AND p.user_id = $2
           WHERE e.experiment_id = $1""",
        experiment_id,
        user_id,
    )
    if row is None:
        raise NotFound("Experiment not found")
    return row["role"]


async def check_role(database: Database, experiment_id: uuid.UUID, user_id: str, required: Role) -> Role:
    """Raise 403 unless ``user_id`` holds ``required`` (an owner satisfies
    ``participant``) in the experiment; 404 if the experiment does not exist."""
    role = await experiment_role(database, experiment_id, user_id)
    if role is None:
        raise Forbidden(f"Forbidden: {user_id} is not a member of experiment {experiment_id} (join it first)")
    if required == "owner" and role != "owner":
        raise Forbidden(f"Forbidden: this needs the owner role in experiment {experiment_id}; {user_id} is a {role}")
    return role


# ---------------------------------------------------------------- Litestar glue
def identity_of(connection: Any) -> Identity:
    """The caller's identity (cached on the connection); 401 when absent."""
    cached = connection.scope.get("eeghub.identity")
    if cached is not None:
        return cached
    identity = header_identity(connection)
    if identity is None:
        mode = connection.app.state.ctx.auth.mode
        raise Unauthorized(MISSING_IDENTITY if mode in HEADER_MODES else "a bearer token is required")
    return identity


def signed_link(connection: Any, path: str) -> str:
    """``path`` (unquoted) as a download link: signed in ``jwt`` mode (a
    browser opens it without the bearer token), the plain path in the header
    modes; percent-encoded in both (a file name may hold ``#``, ``?``, ``%``)."""
    links = connection.app.state.ctx.auth.links
    return links.sign(path) if links is not None else quote(path)


def has_valid_link(connection: Any) -> bool:
    """The request is a signed download link for its own path (``jwt``)."""
    links = connection.app.state.ctx.auth.links
    return links is not None and links.verify(connection.url.path, connection.query_params)


def header_identity(connection: Any) -> Identity | None:
    """The identity the request's header or token carries, or None (an
    invalid one is still a 401)."""
    cached = connection.scope.get("eeghub.identity")
    if cached is not None:
        return cached
    ctx = connection.app.state.ctx
    admin_token = connection.headers.get(LOCAL_ADMIN_HEADER)
    identity = _local_admin(connection, ctx, admin_token) if admin_token is not None else ctx.auth.identify(connection.headers)
    if identity is not None:
        connection.scope["eeghub.identity"] = identity
    return identity


def compat_mode(connection: Any) -> bool:
    return connection.app.state.ctx.auth.mode == "compat"


def claimed_identity(connection: Any, claimed: str | None, where: str) -> Identity:
    """The caller on the calls where the predecessor took it from the
    request: the header or token when there is one (the route then checks
    that ``claimed`` matches it); else, in ``compat`` mode only, the user id
    the request names at ``where``. 401 otherwise."""
    identity = header_identity(connection)
    if identity is not None:
        return identity
    if compat_mode(connection) and isinstance(claimed, str) and valid_user_id(claimed):
        identity = Identity(user_id=claimed, claims={"claimed_in": where})
        connection.scope["eeghub.identity"] = identity
        return identity
    return identity_of(connection)  # raises the mode's 401


def _local_admin(connection: Any, ctx: Any, supplied: str) -> Identity:
    expected = ctx.services.get("admin_token")
    if expected is None:
        raise Unauthorized(f"{LOCAL_ADMIN_HEADER}: this server has no local administrator token (auth.local_admin_token)")
    client = connection.client.host if connection.client else None
    if not _is_loopback(client) or any(h in connection.headers for h in FORWARDING_HEADERS):
        raise Forbidden(f"Forbidden: {LOCAL_ADMIN_HEADER} is accepted only from this machine (loopback, not through a proxy)")
    if not hmac.compare_digest(supplied.strip().encode(), expected.encode()):
        raise Unauthorized(f"{LOCAL_ADMIN_HEADER}: wrong token (it changes at every start; read <data_dir>/{ADMIN_TOKEN_FILE})")
    return Identity(user_id=LOCAL_ADMIN_USER, local_admin=True)


async def require_user(connection: Any, _: Any) -> None:
    """Guard: the request must carry a valid identity. (Async on purpose:
    Litestar runs a synchronous guard in a thread pool on every request.)"""
    identity_of(connection)


async def require_user_or_link(connection: Any, _: Any) -> None:
    """Guard of a download a browser may open: a valid identity, or a signed
    link for exactly this path (``jwt`` mode)."""
    if not has_valid_link(connection):
        identity_of(connection)


def require_role(role: Role, param: str = "experiment_id", *, or_link: bool = False) -> Any:
    """Guard factory: the caller must hold ``role`` in the experiment named by
    the path parameter ``param``. ``or_link``: a signed link for exactly this
    path (``jwt`` mode) is enough (downloads a browser opens)."""

    async def guard(connection: Any, _: Any) -> None:
        if or_link and has_valid_link(connection):
            return
        identity = identity_of(connection)
        experiment_id = parse_experiment_id(connection.path_params[param])
        await check_role(connection.app.state.ctx.database, experiment_id, identity.user_id, role)

    guard.__name__ = f"require_{role}"
    return guard


def provide_identity(request: Any) -> Identity:
    """Dependency ``identity``: the authenticated caller."""
    return identity_of(request)


async def check_session_reader(database: Database, session: Any, user_id: str) -> None:
    """A session's data is readable by the user who recorded it and by the
    owners of its experiment; 403 for anyone else."""
    if session["user_id"] == user_id:
        return
    if session["experiment_id"] is None:
        raise Forbidden("Forbidden: only the user who recorded this session may read it (it belongs to no experiment)")
    await check_role(database, session["experiment_id"], user_id, "owner")
