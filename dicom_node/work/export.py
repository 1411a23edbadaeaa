"""Write-back: the outbox of objects to send to a peer with C-STORE, and the DICOM utilities echo/send.

An ``export`` job (:func:`enqueue_export`) names a configured peer with ``receive_results: true`` and the
files to send. A DICOMweb peer (``type: dicomweb``) gets them with STOW-RS (:mod:`dicom_node.work.dicomweb`),
through the same checkpoints, retries and dead letters. For a DIMSE peer the handler opens an association
(over DICOM TLS for a peer with ``tls: true``) that proposes, for every object, exactly its SOP class with
exactly its transfer syntax (one presentation context per distinct pair, at most 128 per association), sets
TCP_NODELAY, sends each object and checks every response:

* ``0x0000`` success; ``0xB000``/``0xB006``/``0xB007`` warnings are success, logged;
* ``0xA7xx`` (out of resources), no response, a refused or failed association: the job is retried with
  backoff (the PACS may be down or full);
* any other failure status, or a presentation context the peer refuses: the job is a dead letter at once
  (retrying cannot help; fix the peer, then ``laurel requeue``).

Idempotent: each delivered SOP Instance UID is checkpointed in the job, so a retry sends only what is
still missing, and the dedupe key (peer + the sorted paths) keeps the same outbox from being queued twice.
A crash between the peer's Success and the checkpoint sends that object once more, with the same SOP
Instance UID: a PACS keeps one copy (Orthanc and DCMTK's storescp do; the restart tests count them).
Paths in the payload are relative to ``node.storage_dir`` (absolute ones, from 0.1 jobs, work as they are).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from dicom_node.core.config import DicomwebPeer, NodeConfig, Peer, TlsSection
from dicom_node.core.db import Job, resolve_path, utcnow
from dicom_node.core.jobs import Handler, JobContext, PermanentJobError, enqueue, fault_point
from dicom_node.core.metrics import NodeMetrics
from dicom_node.intake.netguard import set_nodelay
from dicom_node.work.sending import (  # re-exported: the CLI, the workflow and the tests import them here
    SUCCESS,
    WARNING_STATUSES,
    ExportError,
    ExportRefused,
    ObjectToSend,
    SendReport,
    describe,
)

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

logger = logging.getLogger(__name__)

EXPORT_JOB = "export"
_MAX_CONTEXTS = 128


def _nodelay(event: Event) -> None:
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        set_nodelay(sock)


def associate(
    local_ae_title: str,
    peer: Peer,
    contexts: Iterable[tuple[str, Sequence[str]]],
    *,
    max_pdu: int = 262_144,
    timeout: float = 30.0,
    tls: TlsSection | None = None,
) -> Association:
    """Open an association with ``peer`` proposing these (SOP class, transfer syntaxes) contexts.

    TCP_NODELAY is set on the socket as soon as it connects. A peer with ``tls: true`` is reached over
    DICOM TLS with the ``tls`` section's certificate and CAs (the handshake is bounded by ``timeout``). The
    association may be refused: check ``is_established``.
    """
    from pynetdicom import AE, evt

    from dicom_node.core.tls import client_tls_args

    ae = AE(ae_title=local_ae_title)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, list(syntaxes))
    return ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.ae_title,
        max_pdu=max_pdu,
        evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)],
        tls_args=client_tls_args(tls, peer),
    )


def echo(local_ae_title: str, peer: Peer, *, timeout: float = 30.0, tls: TlsSection | None = None) -> int:
    """C-ECHO ``peer``; returns the status (raises :class:`ExportError` when no association is possible)."""
    from pydicom.uid import ImplicitVRLittleEndian

    from dicom_node.intake.scp import VERIFICATION

    assoc = associate(local_ae_title, peer, [(VERIFICATION, [ImplicitVRLittleEndian])], timeout=timeout, tls=tls)
    if not assoc.is_established:
        raise ExportError(_why_not_established(assoc, peer, tls))
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in status:
        raise ExportError(f"peer {peer.name} did not answer the C-ECHO")
    return int(status.Status)


@dataclass(frozen=True)
class EchoOutcome:
    """A C-ECHO's result in one line: ``status`` is ``None`` when no association was possible."""

    ok: bool
    message: str
    status: int | None = None


def echo_outcome(
    local_ae_title: str, peer: Peer | DicomwebPeer, *, timeout: float, tls: TlsSection | None = None
) -> EchoOutcome:
    """C-ECHO ``peer`` within ``timeout`` seconds per step and say what happened (``laurel echo``, the console)."""
    if not isinstance(peer, Peer):
        return EchoOutcome(False, f"peer {peer.name} is a DICOMweb peer; C-ECHO is for DIMSE peers")
    where = f"{peer.name} ({peer.ae_title}@{peer.host}:{peer.port}{', DICOM TLS' if peer.tls else ''})"
    try:
        code = echo(local_ae_title, peer, timeout=timeout, tls=tls)
    except ExportError as exc:
        return EchoOutcome(False, str(exc))
    return EchoOutcome(code == SUCCESS, f"C-ECHO {where}: status 0x{code:04X}", code)


def _why_not_established(assoc: Association, peer: Peer, tls: TlsSection | None = None) -> str:
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        detail = ""
        if rj is not None:
            detail = f" (result {rj.result}, source {rj.result_source}, reason {rj.diagnostic})"
        return f"peer {peer.name} ({peer.ae_title}@{peer.host}:{peer.port}) rejected the association{detail}"
    where = f"{peer.ae_title}@{peer.host}:{peer.port}"
    if peer.tls:
        from dicom_node.core.tls import probe

        why = probe(tls, peer, timeout=10.0) or "aborted after the TLS handshake"
        return f"no association with peer {peer.name} ({where}, DICOM TLS): {why}"
    return f"no association with peer {peer.name} ({where}): not reachable or aborted"


#: Uncompressed transfer syntaxes: an object in one of them can be sent in any other (lossless re-encoding).
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")


def proposed_syntaxes(transfer_syntax: str) -> list[str]:
    """What to propose for an object: its own transfer syntax first, then (uncompressed only) the others."""
    if transfer_syntax in UNCOMPRESSED:
        return [transfer_syntax, *(ts for ts in UNCOMPRESSED if ts != transfer_syntax)]
    return [transfer_syntax]


def describe_refusal(sop_class_uid: str, syntaxes: Sequence[str]) -> str:
    """A refused presentation context in words: the SOP class and the transfer syntaxes offered."""
    from pydicom.uid import UID

    names = ", ".join(UID(ts).name or ts for ts in syntaxes)
    known = _NEWER_SOP_CLASSES.get(sop_class_uid) or UID(sop_class_uid).name
    name = known if known and known != sop_class_uid else "SOP class"
    return f"{name} ({sop_class_uid}) in {names}"


#: SOP classes newer than the pydicom dictionary.
_NEWER_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage"}


def send_objects(
    local_ae_title: str,
    peer: Peer,
    objects: Sequence[ObjectToSend],
    *,
    on_stored: Callable[[ObjectToSend, int], None] | None = None,
    max_pdu: int = 262_144,
    timeout: float = 30.0,
    tls: TlsSection | None = None,
) -> SendReport:
    """C-STORE ``objects`` to ``peer``: each in its own transfer syntax, or re-encoded losslessly into another
    uncompressed one when that is what the peer accepts (explicit → implicit VR little endian, say).

    ``on_stored`` is called after each object the peer stored. Raises :class:`ExportError` when an
    association cannot be made or breaks; returns the per-object statuses and the refused contexts.
    """
    from pydicom import dcmread
    from pydicom.uid import ImplicitVRLittleEndian

    from dicom_node.intake.scp import VERIFICATION

    report = SendReport({o.sop_instance_uid: None for o in objects})
    wanted: dict[tuple[str, tuple[str, ...]], list[ObjectToSend]] = {}
    for o in objects:
        wanted.setdefault((o.sop_class_uid, tuple(proposed_syntaxes(o.transfer_syntax))), []).append(o)
    keys = sorted(wanted)
    for start in range(0, len(keys), _MAX_CONTEXTS - 1):
        chunk = keys[start : start + _MAX_CONTEXTS - 1]
        # Verification rides along: a peer that refuses every storage context still accepts the association,
        # so the refusal is known (and answered with another syntax or a dead letter), not taken for an outage.
        offered = [*chunk, (VERIFICATION, (ImplicitVRLittleEndian,))]
        assoc = associate(local_ae_title, peer, offered, max_pdu=max_pdu, timeout=timeout, tls=tls)
        if not assoc.is_established:
            raise ExportError(_why_not_established(assoc, peer, tls))
        try:
            accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
            for key in chunk:
                sop_class, syntaxes = key
                if not any((sop_class, ts) in accepted for ts in syntaxes):
                    report.refused_contexts.append((sop_class, syntaxes))
                    continue
                for obj in wanted[key]:
                    ds = dcmread(obj.path)
                    status = assoc.send_c_store(ds)  # pynetdicom re-encodes into the accepted uncompressed syntax
                    if "Status" not in status:
                        raise ExportError(f"peer {peer.name} sent no C-STORE response for an object (association lost)")
                    code = int(status.Status)
                    report.statuses[obj.sop_instance_uid] = code
                    if code == SUCCESS or code in WARNING_STATUSES:
                        if code != SUCCESS:
                            logger.warning(
                                "peer %s stored SOP instance %s with warning 0x%04X",
                                peer.name,
                                obj.sop_instance_uid,
                                code,
                            )
                        if on_stored is not None:
                            on_stored(obj, code)
                    else:
                        logger.error(
                            "peer %s refused SOP instance %s: status 0x%04X", peer.name, obj.sop_instance_uid, code
                        )
        finally:
            if assoc.is_established:
                assoc.release()
    return report


def export_dedupe_key(peer_name: str, paths: Iterable[str]) -> str:
    """The dedupe key of an outbox: the peer and a digest of the sorted paths."""
    digest = hashlib.sha256("\n".join(sorted(str(p) for p in paths)).encode()).hexdigest()[:32]
    return f"{EXPORT_JOB}:{peer_name}:{digest}"


def enqueue_export(
    session: Session, peer_name: str, paths: list[str], reason: str, *, dedupe_key: str | None = None
) -> Job:
    """Queue an ``export`` job sending ``paths`` to the configured peer ``peer_name`` (the caller commits)."""
    if not paths:
        raise ValueError("an export needs at least one file")
    payload = {"peer": peer_name, "paths": [str(p) for p in paths], "reason": reason}
    return enqueue(
        session,
        EXPORT_JOB,
        payload,
        dedupe_key=dedupe_key or export_dedupe_key(peer_name, paths),
        max_attempts=EXPORT_MAX_ATTEMPTS,
    )


#: SOP classes of DICOM-SEG: BINARY (and FRACTIONAL) segmentation, and Label Map Segmentation.
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.7"
SEG_TYPE_OF_CLASS = {SEGMENTATION: "BINARY", LABEL_MAP_SEGMENTATION: "LABELMAP"}
#: Export jobs retry until their horizon (``jobs.export_retry_hours``), not a number of attempts.
EXPORT_MAX_ATTEMPTS = 100_000

#: Rebuilds an approved SEG file as another SEG type (BINARY | LABELMAP); returns the new file.
Rebuild = Callable[[Path, str], Path]


def export_handler(config: NodeConfig, metrics: NodeMetrics | None = None, rebuild: Rebuild | None = None) -> Handler:
    """The handler of ``export`` jobs (see the module docstring).

    With ``rebuild`` (the workflow gives one), an approved SEG whose type is not the configured
    ``segmentation.seg_type`` is rebuilt before it is sent (a config change applies to jobs already queued),
    and a peer that refuses LABELMAP gets BINARY when ``segmentation.labelmap_fallback`` is on.
    """

    def conform(obj: ObjectToSend, seg_type: str) -> ObjectToSend:
        if rebuild is None or SEG_TYPE_OF_CLASS.get(obj.sop_class_uid, seg_type) == seg_type:
            return obj
        try:
            return describe(rebuild(obj.path, seg_type))
        except (LookupError, ValueError) as exc:
            raise PermanentJobError(f"{obj.path.name} cannot be rebuilt as {seg_type}: {exc}") from exc

    def handle(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            peer = config.peer(str(payload["peer"]))
        except KeyError as exc:
            raise PermanentJobError(str(exc).strip("\"'")) from exc
        if not peer.receive_results:
            raise PermanentJobError(f"peer {peer.name} does not receive results (receive_results: false)")
        sent: set[str] = set(ctx.saved.get("sent", []))
        objects: list[ObjectToSend] = []
        for raw in payload.get("paths", []):
            try:
                obj = describe(resolve_path(config.node.storage_dir, str(raw)))
            except ValueError as exc:
                raise PermanentJobError(str(exc)) from exc
            obj = conform(obj, config.segmentation.seg_type)
            if obj.sop_instance_uid not in sent:
                objects.append(obj)
        fault_point("export.before_send", ctx)

        def stored(obj: ObjectToSend, status: int) -> None:
            fault_point("export.after_send", ctx)
            sent.add(obj.sop_instance_uid)
            ctx.checkpoint({"sent": sorted(sent)})
            if metrics is not None:
                metrics.instances_exported.labels(peer=peer.name, outcome="stored").inc()

        report = _send(ctx, peer, objects, stored)
        refused = [o for o in objects if o.sop_instance_uid not in sent and _refused(o, report)]
        fallback = [o for o in refused if o.sop_class_uid == LABEL_MAP_SEGMENTATION]
        if fallback and rebuild is not None and config.segmentation.labelmap_fallback:
            logger.warning("peer %s refuses LABELMAP SEGs; sending %d as BINARY", peer.name, len(fallback))
            binary = [conform(o, "BINARY") for o in fallback]
            again = _send(ctx, peer, [b for b in binary if b.sop_instance_uid not in sent], stored)
            report.statuses.update(again.statuses)
            report.refused_contexts = [c for c in report.refused_contexts if c[0] != LABEL_MAP_SEGMENTATION]
            report.refused_contexts.extend(again.refused_contexts)
        if report.refused_contexts:
            what = "; ".join(describe_refusal(c, t) for c, t in report.refused_contexts)
            raise PermanentJobError(
                f"peer {peer.name} accepts none of the transfer syntaxes offered for: {what}. Configure the peer "
                "to accept them (or set segmentation.seg_type: BINARY), then requeue this job"
            )
        failed = {
            uid: s for uid, s in report.statuses.items() if s is not None and s != SUCCESS and s not in WARNING_STATUSES
        }
        if failed:
            if metrics is not None:
                metrics.instances_exported.labels(peer=peer.name, outcome="failed").inc(len(failed))
            detail = ", ".join(f"0x{s:04X}" for s in sorted(set(failed.values())))
            if all(0xA700 <= s <= 0xA7FF for s in failed.values()):
                _retry_or_give_up(ctx, f"peer {peer.name} is out of resources ({detail}); {len(failed)} objects wait")
            raise PermanentJobError(f"peer {peer.name} refused {len(failed)} objects with status {detail}")
        return {"peer": peer.name, "sent": sorted(sent), "count": len(sent)}

    def _send(
        ctx: JobContext,
        peer: Peer | DicomwebPeer,
        objects: list[ObjectToSend],
        stored: Callable[[ObjectToSend, int], None],
    ) -> SendReport:
        if not objects:
            return SendReport()
        started = time.perf_counter()
        try:
            if isinstance(peer, DicomwebPeer):
                from dicom_node.work.dicomweb import stow_objects

                try:
                    return stow_objects(peer, objects, on_stored=stored)
                except ExportRefused as exc:
                    raise PermanentJobError(f"{exc}; fix it, then requeue this job") from exc
            return send_objects(
                config.node.ae_title,
                peer,
                objects,
                on_stored=stored,
                max_pdu=config.node.max_pdu,
                timeout=config.node.network_timeout,
                tls=config.tls,
            )
        except ExportError as exc:
            if metrics is not None:
                metrics.instances_exported.labels(peer=peer.name, outcome="retry").inc()
            _retry_or_give_up(ctx, str(exc))
            raise  # pragma: no cover - _retry_or_give_up always raises
        finally:
            if metrics is not None:
                metrics.export_seconds.labels(peer=peer.name).observe(time.perf_counter() - started)

    def _retry_or_give_up(ctx: JobContext, why: str) -> None:
        """Within the retry horizon: a retry (ExportError). Past it: a dead letter that says how long it tried."""
        horizon = timedelta(hours=config.jobs.export_retry_hours)
        if ctx.created_at is not None and utcnow() - ctx.created_at > horizon:
            raise PermanentJobError(
                f"{why}; gave up after {config.jobs.export_retry_hours:g} h of retries (jobs.export_retry_hours). "
                "Requeue the job once the peer is back"
            )
        raise ExportError(why)

    return handle


def _refused(obj: ObjectToSend, report: SendReport) -> bool:
    return any(obj.sop_class_uid == sop_class for sop_class, _syntaxes in report.refused_contexts)
