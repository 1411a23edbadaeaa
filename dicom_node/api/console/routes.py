"""``/console``: the node's admin pages. Routes are thin: each parses, calls one function of the console's
modules or the workflow, and renders a template (or redirects after a POST)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from starlette.responses import HTMLResponse, RedirectResponse, Response

from dicom_node.api.console import auth, charts, overview, peers, settings, tester
from dicom_node.api.console.deps import Admin, Key, same_origin
from dicom_node.api.console.deps import Form as CheckedForm
from dicom_node.api.console.forms import FormRefused, read_multipart
from dicom_node.api.console.render import page
from dicom_node.api.deps import DbSession, RowId, Services
from dicom_node.core import jobs
from dicom_node.core.config_changes import ConfigChangeError
from dicom_node.core.db import session_scope
from dicom_node.core.review_tables import AuditEvent
from dicom_node.core.tokens import token_row
from dicom_node.work import admin as acts
from dicom_node.work.learning import RegistryError
from dicom_node.work.review import NotFound, ReviewConflict

router = APIRouter(prefix="/console", include_in_schema=False)


def _status_of(exc: Exception) -> int:
    """404 for what does not exist, 409 for what is in the wrong state."""
    return 409 if isinstance(exc, ReviewConflict) else 404


def _common(admin: Admin, active: str) -> dict[str, Any]:
    return {"identity": admin.identity, "csrf": admin.csrf, "active": active}


def _failed(admin: Admin, exc: Exception, status_code: int) -> HTMLResponse:
    return page("error.html", status_code=status_code, message=str(exc), **_common(admin, ""))


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a console path may follow a login (no open redirect)."""
    if not target or not target.startswith("/console") or target.startswith("//") or "\\" in target:
        return "/console"
    return target


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=auth.COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# -- login ------------------------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, key: Key, next: str = "/console") -> HTMLResponse:
    """The login form: paste an admin token."""
    nonce = secrets.token_urlsafe(16)
    response = page("login.html", csrf=auth.csrf_token(key, "login:" + nonce), next=_safe_next(next), error="")
    _set_cookie(request, response, auth.LOGIN_COOKIE, nonce, 3600)
    return response


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    services: Services,
    session: DbSession,
    key: Key,
    token: Annotated[str, Form(max_length=512)] = "",
    csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=512)] = "/console",
) -> Response:
    """Check the token; an admin gets a session cookie, an operator 403, anyone else the form again."""
    same_origin(request)
    nonce = request.cookies.get(auth.LOGIN_COOKIE)
    auth.check_csrf(key, "login:" + nonce if nonce else None, csrf)
    row = token_row(session, token.strip()) if token.strip() else None
    if row is None:
        return page(
            "login.html",
            status_code=401,
            csrf=csrf,
            next=_safe_next(next),
            error="the token was refused: it is unknown or revoked (`laurel token create NAME --role admin`)",
        )
    auth.require_admin(auth.Identity(row.operator, row.role))
    session.add(AuditEvent(operator=row.operator, action="console_login", detail={"via": "token"}))
    redirect = _back(_safe_next(next))
    _set_cookie(request, redirect, auth.SESSION_COOKIE, auth.session_cookie(key, row), auth.SESSION_SECONDS)
    redirect.delete_cookie(auth.LOGIN_COOKIE, path=auth.COOKIE_PATH)
    return redirect


@router.get("/login/once")
def login_once(
    request: Request, session: DbSession, key: Key, code: str = Query("", max_length=256), next: str = "/console"
) -> Response:
    """Log in with a one-time link from ``laurel console-link NAME`` (valid two minutes, once)."""
    row = auth.redeem_link_code(session, key, code, request.app.state.console_used_codes)
    if row is None:
        return page("error.html", status_code=401, message="this login link is unknown, expired or already used")
    session.add(AuditEvent(operator=row.operator, action="console_login", detail={"via": "one-time link"}))
    response = _back(_safe_next(next))
    _set_cookie(request, response, auth.SESSION_COOKIE, auth.session_cookie(key, row), auth.SESSION_SECONDS)
    return response


@router.post("/logout")
def logout(admin: Admin, _form: CheckedForm, session: DbSession) -> Response:
    """End the browser's session."""
    session.add(AuditEvent(operator=admin.identity.name, action="console_logout", detail={}))
    response = _back("/console/login")
    response.delete_cookie(auth.SESSION_COOKIE, path=auth.COOKIE_PATH)
    return response


# -- pages ------------------------------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def overview_page(admin: Admin, services: Services, session: DbSession) -> HTMLResponse:
    """Studies by state, the queue, intake, last errors and disk use, with charts."""
    data = overview.overview(session, services.config.node.storage_dir)
    return page(
        "overview.html",
        data=data,
        intake_svg=charts.intake_chart(data.intake),
        queue_svg=charts.queue_chart(data.queue_depth),
        node=services.config.node,
        **_common(admin, "/console"),
    )


@router.get("/peers", response_class=HTMLResponse)
def peers_page(admin: Admin, services: Services, session: DbSession, echo: int | None = Query(None, ge=1)) -> Response:
    """The configured peers, what the index knows of them, and the C-ECHO buttons."""
    result = session.get(AuditEvent, echo) if echo is not None else None
    if result is not None and result.action != peers.ECHO_ACTION:
        result = None
    return page(
        "peers.html",
        peers=peers.peer_statuses(session, services.config),
        echo=result,
        node=services.config.node,
        **_common(admin, "/console/peers"),
    )


@router.post("/peers/{name}/echo")
def echo(name: str, admin: Admin, _form: CheckedForm, services: Services, session: DbSession) -> Response:
    """C-ECHO the peer from the API process (bounded timeouts); the result is shown on the peers page."""
    try:
        event = peers.run_echo(session, services.config, name, admin.identity.name)
    except NotFound as exc:
        return _failed(admin, exc, 404)
    return _back(f"/console/peers?echo={event.id}")


def _routing(admin: Admin, services: Services, session: DbSession, **context: Any) -> HTMLResponse:
    status_code = context.pop("status_code", 200)
    context.setdefault("result", None)
    context.setdefault("error", "")
    return page(
        "routing.html",
        status_code=status_code,
        rules=services.config.routing,
        series=tester.recent_series(session),
        node=services.config.node,
        max_upload=tester.MAX_UPLOAD_BYTES,
        **context,
        **_common(admin, "/console/routing"),
    )


@router.get("/routing", response_class=HTMLResponse)
def routing_page(
    admin: Admin, services: Services, session: DbSession, series: int | None = Query(None, ge=1, le=2**62)
) -> HTMLResponse:
    """The rules in order and the rule tester (``?series=ID`` tests a received series)."""
    if series is None:
        return _routing(admin, services, session)
    try:
        result = tester.try_series(session, services.config, services.registry, series)
    except NotFound as exc:
        return _routing(admin, services, session, error=str(exc), status_code=404)
    except tester.UnreadableFile as exc:
        return _routing(admin, services, session, error=str(exc), status_code=422)
    return _routing(admin, services, session, result=result, picked=series)


@router.post("/routing/test", response_class=HTMLResponse)
async def routing_test(request: Request, admin: Admin, services: Services) -> HTMLResponse:
    """Test an uploaded DICOM file (held in memory, never stored) against the rules."""
    try:
        form = await read_multipart(request, tester.MAX_UPLOAD_BYTES)
    except FormRefused as exc:
        return await _routing_later(admin, services, error=str(exc), status_code=exc.status_code)
    if admin.cookie is not None:
        same_origin(request)
        auth.check_csrf(admin.key, admin.cookie, form.fields.get("csrf"))
    filename, raw = form.files.get("file", ("", b""))
    if not raw:
        return await _routing_later(admin, services, error="choose a DICOM file to test", status_code=422)
    try:
        result = await run_in_threadpool(
            tester.try_upload, raw, filename, form.fields.get("called_ae"), services.config, services.registry
        )
    except tester.UnreadableFile as exc:
        return await _routing_later(admin, services, error=str(exc), status_code=422)
    return await _routing_later(admin, services, result=result)


async def _routing_later(admin: Admin, services: Services, **context: Any) -> HTMLResponse:
    """The routing page rendered off the event loop, with a session of its own."""

    def render() -> HTMLResponse:
        with session_scope(services.engine) as session:
            return _routing(admin, services, session, **context)

    return await run_in_threadpool(render)


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters_page(admin: Admin, session: DbSession) -> HTMLResponse:
    """Jobs that gave up, with their reason and a requeue button."""
    return page("dead_letters.html", letters=jobs.dead_letters(session), **_common(admin, "/console/dead-letters"))


@router.post("/dead-letters/{job_id}/requeue")
def requeue(job_id: RowId, admin: Admin, _form: CheckedForm, session: DbSession) -> Response:
    """Put a dead letter back in the queue (audited)."""
    try:
        acts.requeue_dead_letter(session, job_id, admin.identity.name)
    except (NotFound, ReviewConflict) as exc:
        return _failed(admin, exc, _status_of(exc))
    return _back("/console/dead-letters")


@router.get("/models", response_class=HTMLResponse)
def models_page(admin: Admin, services: Services, session: DbSession) -> HTMLResponse:
    """Every model with its revisions, the active one, pin and rollback; Dice of drafts over time."""
    names = sorted({*services.registry.names(), *(r.model for r in services.config.routing)})
    states = [services.registry.state(n) for n in names]
    dice_svg = charts.dice_chart(charts.dice_points(session))
    return page("models.html", models=states, dice_svg=dice_svg, **_common(admin, "/console/models"))


@router.post("/models/{name}/{act}")
def model_act(name: str, act: str, admin: Admin, form: CheckedForm, services: Services, session: DbSession) -> Response:
    """``pin`` (the active or a given revision), ``unpin`` or ``rollback`` (to a revision); audited."""
    raw = str(form.get("revision") or "").strip()
    if raw and not raw.isdigit():
        return _failed(admin, ReviewConflict(f"revision {raw!r} is not a number"), 422)
    revision = int(raw) if raw else None
    try:
        if act == "pin":
            acts.pin_model(services.registry, session, name, revision, admin.identity.name)
        elif act == "unpin":
            acts.unpin_model(services.registry, session, name, admin.identity.name)
        elif act == "rollback":
            acts.rollback_model(services.registry, session, name, revision, admin.identity.name)
        else:
            return _failed(admin, NotFound(f"there is no model action {act!r} (pin, unpin, rollback)"), 404)
    except (NotFound, RegistryError, ReviewConflict) as exc:
        return _failed(admin, exc, _status_of(exc))
    return _back(f"/console/models#model-{quote(name)}")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(admin: Admin, session: DbSession, limit: int = Query(200, ge=1, le=5000)) -> HTMLResponse:
    """Decisions and administrative acts, newest first (console acts included)."""
    events = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)).all()
    return page("audit.html", events=events, limit=limit, **_common(admin, "/console/audit"))


# -- configuration (applied without a restart by dicom_node.core.config_changes) ------------------------------

_OUTCOMES = {
    "applied": "saved and applied by the running node",
    "unchanged": "saved; nothing the running node applies had changed",
    "not_confirmed": "saved, but the node did not confirm the reload: it applies the file at its next reload",
    "refused": "saved, but the running node refused to reload it: see the audit log",
}


def _config_page(admin: Admin, services: Services, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("rows", [*settings.rule_rows(services.config), settings.RuleRow()])
    context.setdefault("problems", [])
    context.setdefault("added", {})
    context.setdefault("notice", "")
    return page(
        "config.html",
        status_code=status_code,
        peers=settings.current_peers(services.config),
        saved_to=services.config_path,
        peer_fields=settings.PEER_FIELDS,
        **context,
        **_common(admin, "/console/config"),
    )


def _saved(section: str, result: Any) -> RedirectResponse:
    outcome = result.reload.get("outcome", "applied") if isinstance(result.reload, dict) else "applied"
    return _back(f"/console/config?saved={section}&outcome={outcome if outcome in _OUTCOMES else 'applied'}")


@router.get("/config", response_class=HTMLResponse)
def config_page(
    admin: Admin, services: Services, saved: str = Query("", max_length=16), outcome: str = Query("", max_length=16)
) -> HTMLResponse:
    """The peers and routing rules in force, with forms that change them without a restart."""
    notice = (
        f"{saved if saved in ('peers', 'routing') else 'configuration'}: {_OUTCOMES[outcome]}"
        if outcome in _OUTCOMES
        else ""
    )
    return _config_page(admin, services, notice=notice)


@router.post("/config/peers/add", response_class=HTMLResponse)
def add_peer(admin: Admin, form: CheckedForm, services: Services) -> Response:
    """Add a DIMSE peer: validated, saved, audited and applied (it may send at once)."""
    try:
        result = services.change_config({"peers": settings.with_peer_added(services.config, form)}, admin.identity.name)
    except ConfigChangeError as exc:
        added = {k: str(form.get(k, "")) for k in settings.PEER_FIELDS}
        return _config_page(admin, services, 422, problems=exc.problems, added=added)
    return _saved("peers", result)


@router.post("/config/peers/{name}/remove", response_class=HTMLResponse)
def remove_peer(name: str, admin: Admin, _form: CheckedForm, services: Services) -> Response:
    """Remove a peer: new associations from it are refused; one already open finishes."""
    try:
        result = services.change_config(
            {"peers": settings.with_peer_removed(services.config, name)}, admin.identity.name
        )
    except ConfigChangeError as exc:
        return _config_page(admin, services, 422, problems=exc.problems)
    return _saved("peers", result)


@router.post("/config/routing", response_class=HTMLResponse)
def save_routing(admin: Admin, form: CheckedForm, services: Services) -> Response:
    """Check (``action=check``) or save the routing rules as typed; a refusal names the rule, field and reason."""
    check = form.get("action") == "check"
    rows: list[settings.RuleRow] = []
    try:
        rows, rules, problems = settings.routing_from_form(form)
        if problems:
            raise ConfigChangeError(problems)
        result = services.change_config({"routing": rules}, admin.identity.name, dry_run=check)
    except ConfigChangeError as exc:
        loose = settings.attach_problems(rows, exc.problems)
        return _config_page(admin, services, 422, rows=[*rows, settings.RuleRow()], problems=loose)
    if check:
        what = ", ".join(result.diff.sections) or "nothing"
        notice = f"routing: the rules are valid (not saved); saving would change {what}"
        return _config_page(admin, services, rows=[*rows, settings.RuleRow()], notice=notice)
    return _saved("routing", result)
