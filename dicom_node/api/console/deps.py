"""The console's dependencies: the signing key, who is asking (admins only) and CSRF-checked forms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.datastructures import FormData

from dicom_node.api.console import auth
from dicom_node.api.deps import Services
from dicom_node.core.db import session_scope
from dicom_node.core.tokens import Identity, identity_for


def console_key(request: Request, services: Services) -> bytes:
    """The console's signing key (read once per app from ``storage_dir/console.key``)."""
    key: bytes | None = getattr(request.app.state, "console_key", None)
    if key is None:
        key = auth.console_key(services.config.node.storage_dir)
        request.app.state.console_key = key
    return key


Key = Annotated[bytes, Depends(console_key)]


@dataclass(frozen=True)
class Visitor:
    """An admin using the console; ``cookie`` is the session cookie when it came from a browser session."""

    identity: Identity
    cookie: str | None
    key: bytes

    @property
    def csrf(self) -> str:
        """The CSRF token for this session's forms ("" for bearer clients, which need none)."""
        return auth.csrf_token(self.key, self.cookie) if self.cookie else ""


def visitor(request: Request, services: Services, key: Key) -> Visitor:
    """The admin behind a bearer token or a session cookie; raises LoginRequired or AdminRequired otherwise."""
    header = request.headers.get("authorization", "")
    with session_scope(services.engine) as session:
        if header.lower().startswith("bearer "):
            cookie = None
            identity = identity_for(session, header[7:].strip())
        else:
            cookie = request.cookies.get(auth.SESSION_COOKIE)
            identity = auth.identity_from_cookie(session, key, cookie)
    return Visitor(auth.require_admin(identity), cookie, key)


Admin = Annotated[Visitor, Depends(visitor)]


def same_origin(request: Request) -> None:
    """Refuse a browser POST whose Origin header names another site (a second line behind the CSRF token).

    Behind a reverse proxy the public name may arrive as ``X-Forwarded-Host`` (a cross-site form cannot set
    that header: a browser would ask the node first, and the node allows no cross-origin requests).
    """
    origin = request.headers.get("origin")
    ours = {request.headers.get("host", ""), *request.headers.get("x-forwarded-host", "").split(",")}
    if origin and origin != "null" and urlsplit(origin).netloc not in {h.strip() for h in ours if h.strip()}:
        raise auth.CsrfRefused(f"the form was sent from another site ({origin}); use the console's own pages")


async def checked_form(request: Request, admin: Admin) -> FormData:
    """The POSTed form, its CSRF token checked when the request came with a session cookie."""
    form = await request.form(max_files=0, max_fields=20)
    if admin.cookie is not None:
        same_origin(request)
        sent = form.get("csrf")
        auth.check_csrf(admin.key, admin.cookie, sent if isinstance(sent, str) else None)
    return form


Form = Annotated[FormData, Depends(checked_form)]
