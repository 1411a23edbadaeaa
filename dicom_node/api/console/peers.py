"""The peers page: each configured peer with what the index knows of it, and the C-ECHO button.

Everything shown comes from rows, since the intake that receives and the workers that send are other
processes: the last association *from* a peer is its newest received series (``series.calling_ae``), the
last one *to* it its newest delivered ``export`` job, the last error its newest failed export or C-ECHO.
A C-ECHO from the console runs in the API process (:func:`dicom_node.work.export.echo_outcome`, the code of
``laurel echo``) with bounded timeouts and is kept as an audit row, which is also where the page reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.core.config import DicomwebPeer, NodeConfig, Peer
from dicom_node.core.db import Job, JobState, Series
from dicom_node.core.review_tables import AuditEvent
from dicom_node.work.export import EXPORT_JOB, echo_outcome
from dicom_node.work.review import NotFound

#: The longest a console C-ECHO waits for each step (connect, associate, answer), in seconds.
ECHO_TIMEOUT = 10.0
ECHO_ACTION = "echo"
_RECENT = 1000


@dataclass(frozen=True)
class PeerStatus:
    """A configured peer and its last association in each direction, last error and last C-ECHO."""

    peer: Peer | DicomwebPeer
    last_received: datetime | None
    last_sent: datetime | None
    last_error: tuple[datetime, str] | None
    last_echo: AuditEvent | None

    @property
    def dimse(self) -> Peer | None:
        """The peer when it speaks DIMSE (AE title, host, port; C-ECHO works), else ``None`` (DICOMweb)."""
        return self.peer if isinstance(self.peer, Peer) else None

    @property
    def direction(self) -> str:
        """Which way studies and results go between us and the peer."""
        ways = (("sends to us", self.peer.send_to_us), ("receives results", self.peer.receive_results))
        return " and ".join(w for w, on in ways if on) or "neither (echo only)"


def _newest_echo_per_peer(session: Session) -> dict[str, AuditEvent]:
    newest: dict[str, AuditEvent] = {}
    query = select(AuditEvent).where(AuditEvent.action == ECHO_ACTION).order_by(AuditEvent.id.desc()).limit(_RECENT)
    for event in session.scalars(query):
        newest.setdefault(str((event.detail or {}).get("peer")), event)
    return newest


def peer_statuses(session: Session, config: NodeConfig) -> list[PeerStatus]:
    """Every configured peer, in configuration order, with what the index knows of it."""
    titles = [p.ae_title for p in config.peers if isinstance(p, Peer)]
    received = dict(
        session.execute(
            select(Series.calling_ae, func.max(func.coalesce(Series.last_instance_at, Series.created_at)))
            .where(Series.calling_ae.in_(titles))
            .group_by(Series.calling_ae)
        ).all()
    )
    sent: dict[str, datetime] = {}
    failed: dict[str, tuple[datetime, str]] = {}
    exports = select(Job).where(Job.kind == EXPORT_JOB).order_by(Job.id.desc()).limit(_RECENT)
    for job in session.scalars(exports):
        name = str((job.payload or {}).get("peer"))
        if job.state == JobState.DONE and job.finished_at is not None:
            sent.setdefault(name, job.finished_at)
        if job.state in (JobState.FAILED, JobState.DEAD) and job.last_error:
            failed.setdefault(name, (job.updated_at, f"export job {job.id}: {job.last_error}"))
    echoes = _newest_echo_per_peer(session)
    statuses = []
    for peer in config.peers:
        echo = echoes.get(peer.name)
        error = failed.get(peer.name)
        if echo is not None and not (echo.detail or {}).get("ok") and (error is None or echo.at > error[0]):
            error = (echo.at, f"C-ECHO: {(echo.detail or {}).get('message', '')}")
        last_received = received.get(peer.ae_title) if isinstance(peer, Peer) else None
        statuses.append(PeerStatus(peer, last_received, sent.get(peer.name), error, echo))
    return statuses


def run_echo(session: Session, config: NodeConfig, name: str, operator: str) -> AuditEvent:
    """C-ECHO the configured peer ``name`` and record the outcome as an audit row (the caller commits)."""
    try:
        peer = config.peer(name)
    except KeyError as exc:
        raise NotFound(str(exc.args[0])) from exc
    timeout = min(ECHO_TIMEOUT, config.node.network_timeout)
    outcome = echo_outcome(config.node.ae_title, peer, timeout=timeout, tls=config.tls)
    detail: dict[str, Any] = {
        "peer": peer.name,
        "ok": outcome.ok,
        "status": outcome.status,
        "message": outcome.message,
    }
    event = AuditEvent(operator=operator, action=ECHO_ACTION, detail=detail)
    session.add(event)
    session.flush()
    return event
