"""FastAPI dependencies of the node API: the node's services, a database session, who is asking and their role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from dicom_node.core.db import session_scope
from dicom_node.core.tokens import ADMIN, Identity, identity_for
from dicom_node.work.services import NodeServices

_bearer = HTTPBearer(auto_error=False, description="a token from `laurel token create NAME [--role admin]`")


def get_services(request: Request) -> NodeServices:
    """The running node's services (set by :func:`dicom_node.api.app.create_app`)."""
    services: NodeServices = request.app.state.services
    return services


Services = Annotated[NodeServices, Depends(get_services)]


def get_session(services: Services) -> Iterator[Session]:
    """A session committed when the request succeeds."""
    with session_scope(services.engine) as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


def require_identity(
    services: Services,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """Who sent the bearer token that came with the request, with its role; 401 otherwise."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>' (from `laurel token create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    with session_scope(services.engine) as session:
        identity = identity_for(session, credentials.credentials)
    if identity is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the token was refused: it is unknown or revoked; ask for a new one (`laurel token create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return identity


Caller = Annotated[Identity, Depends(require_identity)]


def require_operator(identity: Caller) -> str:
    """The name of whoever sent a valid token: operators and admins may both review."""
    return identity.name


def require_admin(identity: Caller) -> str:
    """The name of an admin; 403 with a message for an operator token."""
    if identity.role != ADMIN:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"this needs an admin token; the token of {identity.name!r} has the role {identity.role!r} "
            "(an admin creates one with `laurel token create NAME --role admin`)",
        )
    return identity.name


Operator = Annotated[str, Depends(require_operator)]
Admin = Annotated[str, Depends(require_admin)]


#: A row id in a path: a positive 64-bit integer (anything else is a 422 that says so, never a 500).
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the id the node gave the row")]
