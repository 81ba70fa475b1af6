"""Experiments and their participants (the predecessor's session manager
``/experiments`` routes and auth manager ``/auth`` routes)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, patch, post, put
from litestar.params import Parameter

from eeghub.core.auth import Identity, check_role, claimed_identity, parse_experiment_id, require_role, require_user
from eeghub.core.context import AppContext
from eeghub.core.errors import Conflict, Forbidden, NotFound, Unauthorized
from eeghub.core.http import IdParam, UuidParam, error_responses

from .passwords import hash_password, verify_password
from .schemas import (
    AuthCheck,
    AuthCheckResult,
    Experiment,
    ExperimentCreate,
    ExperimentCreated,
    ExperimentDetail,
    ExperimentUpdate,
    JoinRequest,
    Message,
    Participant,
    ParticipantSummary,
    RoleChange,
)

log = logging.getLogger("eeghub.session")

EXPERIMENT_ID = Parameter(description="Experiment UUID")


def _experiment(row: Any, cls: type[Experiment] = Experiment, **extra: Any) -> Any:
    return cls(
        experiment_id=row["experiment_id"],
        name=row["name"],
        description=row["description"],
        presentation_order=row["presentation_order"],
        role=row.get("role") if hasattr(row, "get") else row["role"],
        has_password=row["password_hash"] is not None,
        **extra,
    )


@post(
    "/api/v1/experiments",
    guards=[require_user],
    tags=["experiments"],
    status_code=201,
    responses=error_responses(400, 401, 413, 503),
)
async def create_experiment(data: ExperimentCreate, ctx: AppContext, identity: Identity) -> ExperimentCreated:
    """Create an experiment; the caller becomes its owner."""
    password_hash = await hash_password(data.password) if data.password else None
    async with ctx.database.transaction() as conn:
        experiment_id = await conn.fetchval(
            """INSERT INTO experiments (name, description, password_hash, presentation_order)
               VALUES ($1, $2, $3, $4) RETURNING experiment_id""",
            data.name,
            data.description,
            password_hash,
            data.presentation_order,
        )
        await conn.execute(
            "INSERT INTO experiment_participants (experiment_id, user_id, role) VALUES ($1, $2, 'owner')",
            experiment_id,
            identity.user_id,
        )
    return ExperimentCreated(
        experiment_id=experiment_id,
        name=data.name,
        description=data.description,
        presentation_order=data.presentation_order,
    )


@get("/api/v1/experiments", guards=[require_user], tags=["experiments"], responses=error_responses(401, 503))
async def list_experiments(ctx: AppContext, identity: Identity) -> list[Experiment]:
    """Experiments where the caller is owner or participant, by name."""
    rows = await ctx.database.fetch(
        """SELECT e.experiment_id, e.name, e.description, e.presentation_order, e.password_hash, p.role
           FROM experiments e JOIN experiment_participants p ON p.experiment_id = e.experiment_id
           WHERE p.user_id = $1 ORDER BY e.name, e.experiment_id""",
        identity.user_id,
    )
    return [_experiment(r) for r in rows]


@get(
    "/api/v1/experiments/{experiment_id:str}",
    guards=[require_role("participant")],
    tags=["experiments"],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def get_experiment(experiment_id: UuidParam, ctx: AppContext, identity: Identity) -> ExperimentDetail:
    """One experiment with counts (members only)."""
    row = await ctx.database.fetchrow(
        """SELECT e.*, p.role,
                  (SELECT count(*) FROM experiment_participants x
                    WHERE x.experiment_id = e.experiment_id AND x.role = 'participant') AS participants,
                  (SELECT count(*) FROM experiment_participants x
                    WHERE x.experiment_id = e.experiment_id AND x.role = 'owner') AS owners,
                  (SELECT count(*) FROM sessions s WHERE s.experiment_id = e.experiment_id) AS sessions,
                  (SELECT count(*) FROM experiment_stimuli st WHERE st.experiment_id = e.experiment_id) AS stimuli
           FROM experiments e
           JOIN experiment_participants p ON p.experiment_id = e.experiment_id AND p.user_id = $2
           WHERE e.experiment_id = $1""",
        parse_experiment_id(experiment_id),
        identity.user_id,
    )
    if row is None:
        raise NotFound("Experiment not found")
    return _experiment(
        row,
        ExperimentDetail,
        participant_count=row["participants"],
        owner_count=row["owners"],
        session_count=row["sessions"],
        stimulus_count=row["stimuli"],
    )


async def _update(experiment_id: str, data: ExperimentUpdate, ctx: AppContext) -> Experiment:
    eid = parse_experiment_id(experiment_id)
    changes: dict[str, Any] = {}
    for field in ("name", "description", "presentation_order"):
        value = getattr(data, field)
        if value is not msgspec.UNSET:
            changes[field] = value
    if data.password is not msgspec.UNSET:
        changes["password_hash"] = await hash_password(data.password) if data.password else None
    if changes:
        assignments = ", ".join(f"{column} = ${i + 2}" for i, column in enumerate(changes))
        await ctx.database.execute(
            f"UPDATE experiments SET {assignments} WHERE experiment_id = $1",  # noqa: S608 - fixed column names
            eid,
            *changes.values(),
        )
    row = await ctx.database.fetchrow(
        "SELECT *, 'owner' AS role FROM experiments WHERE experiment_id = $1", eid
    )
    if row is None:
        raise NotFound("Experiment not found")
    return _experiment(row)


@patch(
    "/api/v1/experiments/{experiment_id:str}",
    guards=[require_role("owner")],
    tags=["experiments"],
    responses=error_responses(400, 401, 403, 404, 413, 503),
)
async def patch_experiment(experiment_id: UuidParam, data: ExperimentUpdate, ctx: AppContext) -> Experiment:
    """Change an experiment's name, description, password or presentation order (owner)."""
    return await _update(experiment_id, data, ctx)


@put(
    "/api/v1/experiments/{experiment_id:str}",
    guards=[require_role("owner")],
    tags=["experiments"],
    responses=error_responses(400, 401, 403, 404, 413, 503),
)
async def put_experiment(experiment_id: UuidParam, data: ExperimentUpdate, ctx: AppContext) -> Experiment:
    """Same as PATCH (the fields sent are changed)."""
    return await _update(experiment_id, data, ctx)


@delete(
    "/api/v1/experiments/{experiment_id:str}",
    guards=[require_role("owner")],
    tags=["experiments"],
    status_code=200,
    responses=error_responses(400, 401, 403, 404, 503),
)
async def delete_experiment(experiment_id: UuidParam, ctx: AppContext) -> Message:
    """Delete an experiment (owner). Its memberships, stimuli and export tasks
    go with it; its sessions and raw data are kept, detached from it."""
    eid = parse_experiment_id(experiment_id)
    keys = await ctx.database.fetch("SELECT object_id FROM experiment_stimuli WHERE experiment_id = $1", eid)
    await ctx.database.execute("DELETE FROM experiments WHERE experiment_id = $1", eid)
    bucket = ctx.settings.object_store.buckets.media
    for row in keys:
        if row["object_id"]:
            try:
                await ctx.objects.delete(bucket, row["object_id"])
            except Exception:  # noqa: BLE001 - the row is gone; a leftover file is only storage
                log.warning("could not delete stimulus object %s", row["object_id"])
    return Message(message="Experiment deleted.")


# ---------------------------------------------------------------- participants
@post(
    "/api/v1/auth/experiments/{experiment_id:str}/join",
    tags=["participants"],
    status_code=201,
    responses=error_responses(400, 401, 403, 404, 413, 503),
)
async def join_experiment(
    experiment_id: UuidParam, request: Request[Any, Any, Any], ctx: AppContext, data: JoinRequest | None = None
) -> Message:
    """Join as a participant, with the experiment's password if it has one.
    The caller joins; nobody enrols someone else. Joining again is a no-op.
    In ``compat`` mode a request without ``X-User-Id`` joins the body's
    ``user_id`` (as the predecessor's app sends it)."""
    data = data or JoinRequest()
    identity = claimed_identity(request, data.user_id, "the body's user_id")
    if data.user_id is not None and data.user_id != identity.user_id:
        raise Forbidden("user_id does not match authenticated user.")
    eid = parse_experiment_id(experiment_id)
    row = await ctx.database.fetchrow("SELECT password_hash FROM experiments WHERE experiment_id = $1", eid)
    if row is None:
        raise NotFound("Experiment not found")
    if row["password_hash"]:
        if not data.password:
            raise Unauthorized("Password is required for this experiment")
        if not await verify_password(row["password_hash"], data.password):
            raise Unauthorized("Invalid password")
    await ctx.database.execute(
        """INSERT INTO experiment_participants (experiment_id, user_id, role) VALUES ($1, $2, 'participant')
           ON CONFLICT (experiment_id, user_id) DO NOTHING""",
        eid,
        identity.user_id,
    )
    return Message(message="Successfully joined experiment")


@get(
    "/api/v1/auth/experiments/{experiment_id:str}/participants",
    guards=[require_role("owner")],
    tags=["participants"],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def list_participants(experiment_id: UuidParam, ctx: AppContext) -> list[ParticipantSummary]:
    """Members of the experiment with their roles (owner)."""
    rows = await ctx.database.fetch(
        """SELECT user_id, role, joined_at FROM experiment_participants
           WHERE experiment_id = $1 ORDER BY joined_at, user_id""",
        parse_experiment_id(experiment_id),
    )
    return [ParticipantSummary(user_id=r["user_id"], role=r["role"], joined_at=r["joined_at"]) for r in rows]


async def _lock_and_count_owners(conn: Any, eid: Any) -> int:
    # Lock the experiment row so two owners demoting each other at once
    # cannot both succeed and leave it ownerless.
    await conn.execute("SELECT 1 FROM experiments WHERE experiment_id = $1 FOR UPDATE", eid)
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM experiment_participants WHERE experiment_id = $1 AND role = 'owner'", eid
        )
    )


@put(
    "/api/v1/auth/experiments/{experiment_id:str}/participants/{user_id:str}",
    guards=[require_role("owner")],
    tags=["participants"],
    responses=error_responses(400, 401, 403, 404, 409, 413, 503),
)
async def change_role(experiment_id: UuidParam, user_id: IdParam, data: RoleChange, ctx: AppContext) -> Participant:
    """Change a member's role (owner). The last owner cannot be demoted."""
    eid = parse_experiment_id(experiment_id)
    async with ctx.database.transaction() as conn:
        owners = await _lock_and_count_owners(conn, eid)
        current = await conn.fetchrow(
            "SELECT role FROM experiment_participants WHERE experiment_id = $1 AND user_id = $2", eid, user_id
        )
        if current is None:
            raise NotFound("Participant not found")
        if current["role"] == "owner" and data.role != "owner" and owners <= 1:
            raise Conflict("An experiment must keep at least one owner.")
        row = await conn.fetchrow(
            """UPDATE experiment_participants SET role = $3 WHERE experiment_id = $1 AND user_id = $2
               RETURNING experiment_id, user_id, role, joined_at""",
            eid,
            user_id,
            data.role,
        )
    return Participant(**dict(row))  # type: ignore[arg-type]


@delete(
    "/api/v1/auth/experiments/{experiment_id:str}/participants/{user_id:str}",
    guards=[require_role("participant")],
    tags=["participants"],
    status_code=200,
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def remove_participant(experiment_id: UuidParam, user_id: IdParam, ctx: AppContext, identity: Identity) -> Message:
    """Remove a member (owner), or leave (the member themself). The last
    owner cannot be removed."""
    eid = parse_experiment_id(experiment_id)
    if user_id != identity.user_id:
        await check_role(ctx.database, eid, identity.user_id, "owner")
    async with ctx.database.transaction() as conn:
        owners = await _lock_and_count_owners(conn, eid)
        current = await conn.fetchrow(
            "SELECT role FROM experiment_participants WHERE experiment_id = $1 AND user_id = $2", eid, user_id
        )
        if current is None:
            raise NotFound("Participant not found")
        if current["role"] == "owner" and owners <= 1:
            raise Conflict("An experiment must keep at least one owner.")
        await conn.execute(
            "DELETE FROM experiment_participants WHERE experiment_id = $1 AND user_id = $2", eid, user_id
        )
    return Message(message="Participant removed.")


@post(
    "/api/v1/auth/check",
    guards=[require_user],
    tags=["participants"],
    status_code=200,
    responses=error_responses(400, 401, 403, 413, 503),
)
async def auth_check(data: AuthCheck, ctx: AppContext, identity: Identity) -> Response[AuthCheckResult]:
    """The predecessor's internal role check, for the caller's own user id."""
    if data.user_id != identity.user_id:
        raise Forbidden("user_id does not match authenticated user.")
    eid = parse_experiment_id(data.experiment_id)
    row = await ctx.database.fetchrow(
        "SELECT role FROM experiment_participants WHERE experiment_id = $1 AND user_id = $2", eid, data.user_id
    )
    role = row["role"] if row else None
    authorized = role == "owner" or (data.required_role == "participant" and role == "participant")
    return Response(AuthCheckResult(authorized=authorized))


ROUTES = [
    create_experiment,
    list_experiments,
    get_experiment,
    patch_experiment,
    put_experiment,
    delete_experiment,
    join_experiment,
    list_participants,
    change_role,
    remove_participant,
    auth_check,
]
