"""FastAPI dependencies of the node API: the node's services, a database session, the operator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from dicom_node.core.db import session_scope
from dicom_node.core.tokens import operator_for
from dicom_node.work.services import NodeServices

_bearer = HTTPBearer(auto_error=False, description="an operator token from `laurel token create OPERATOR`")


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


def require_operator(
    services: Services,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The operator whose bearer token came with the request; 401 otherwise."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>' (from `laurel token create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    with session_scope(services.engine) as session:
        operator = operator_for(session, credentials.credentials)
    if operator is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the token was refused: it is unknown or revoked; ask for a new one (`laurel token create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return operator


Operator = Annotated[str, Depends(require_operator)]


#: A row id in a path: a positive 64-bit integer (anything else is a 422 that says so, never a 500).
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the id the node gave the row")]
