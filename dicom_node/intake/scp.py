"""The node's DICOM SCP: association policy, C-ECHO and C-STORE of every storage SOP class.

Association policy (checked when the A-ASSOCIATE-RQ arrives, before any negotiation):

=====================================================  ==========================================
situation                                              A-ASSOCIATE-RJ (result, source, reason)
=====================================================  ==========================================
called AE title is not ours (node or routing AE)       permanent, service user, 7 called AE title
                                                       not recognised
calling AE title belongs to no peer allowed to send    permanent, service user, 3 calling AE title
                                                       not recognised
calling AE title known but the connection comes from   permanent, service user, 3 calling AE title
an address that is not that peer's host                not recognised (the peer is AE title + host)
``node.max_associations`` already established          transient, provider (presentation),
                                                       2 local limit exceeded
=====================================================  ==========================================

Every rejection is logged with its reason. An accepted association's presentation contexts get the
first transfer syntax in the *requestor's* order (:func:`contexts_in_requestor_order`). Limits on what a
peer may send, before and after acceptance, are :mod:`dicom_node.intake.netguard`'s. The C-STORE handler is an
adapter: it unpacks the event, calls :meth:`dicom_node.intake.store.Store.receive`, and returns a named status;
any exception becomes a failure status, never a dead association.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_node.core.config import NodeConfig, Peer
from dicom_node.intake.received import StoreStatus
from dicom_node.intake.routing import Router
from dicom_node.intake.store import Incoming, Store

if TYPE_CHECKING:
    from pynetdicom import AE
    from pynetdicom.events import Event
    from pynetdicom.presentation import PresentationContext
    from pynetdicom.transport import ThreadedAssociationServer

    from dicom_node.core.metrics import NodeMetrics

logger = logging.getLogger(__name__)

#: The Verification SOP Class (C-ECHO).
VERIFICATION = "1.2.840.10008.1.1"

#: Transfer syntaxes accepted for every storage SOP class; objects are stored as received.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
    ExplicitVRBigEndian,
)


@dataclass(frozen=True)
class Rejection:
    """Why an association is refused, with the A-ASSOCIATE-RJ result, source and reason it gets."""

    label: str
    result: int
    source: int
    reason: int


#: Permanent, by the service user: called AE title not recognised.
CALLED_AE_NOT_RECOGNISED = Rejection("called_ae", 0x01, 0x01, 0x07)
#: Permanent, by the service user: calling AE title not recognised.
CALLING_AE_NOT_RECOGNISED = Rejection("calling_ae", 0x01, 0x01, 0x03)
#: The calling AE title is a peer's but the connection is not from its host: a peer is AE title + host,
#: so this is also "calling AE title not recognised" (the log says which).
HOST_NOT_RECOGNISED = Rejection("host", 0x01, 0x01, 0x03)
#: Transient, by the presentation service provider: local limit exceeded.
LOCAL_LIMIT_EXCEEDED = Rejection("limit", 0x02, 0x03, 0x02)


@dataclass(frozen=True)
class Decision:
    """The policy's answer: ``rejection`` is ``None`` to accept; ``message`` is the reason to log."""

    rejection: Rejection | None
    message: str = ""
    peer: str | None = None


def _normalise_ip(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def resolve_host(host: str) -> frozenset[str]:
    """The IP addresses of a peer's configured host (an IP stays itself; names are resolved once)."""
    try:
        return frozenset({_normalise_ip(str(ipaddress.ip_address(host)))})
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        logger.warning("peer host %r does not resolve (%s); associations from it will be refused", host, exc)
        return frozenset()
    return frozenset(_normalise_ip(str(info[4][0])) for info in infos)


class AssociationPolicy:
    """Who may open an association: our AE titles, and peers allowed to send, from their own host."""

    def __init__(self, own_ae_titles: Iterable[str], peers: Iterable[Peer]) -> None:
        self.own_ae_titles = frozenset(t.strip() for t in own_ae_titles)
        self._senders: dict[str, list[tuple[Peer, frozenset[str]]]] = {}
        for peer in peers:
            if peer.send_to_us:
                self._senders.setdefault(peer.ae_title, []).append((peer, resolve_host(peer.host)))

    def decide(self, called_ae: str, calling_ae: str, address: str) -> Decision:
        """Accept or refuse an association request (the limit on concurrency is checked elsewhere)."""
        called, calling, ip = called_ae.strip(), calling_ae.strip(), _normalise_ip(address)
        if called not in self.own_ae_titles:
            return Decision(CALLED_AE_NOT_RECOGNISED, f"called AE title {called!r} is not one of ours")
        candidates = self._senders.get(calling)
        if not candidates:
            return Decision(CALLING_AE_NOT_RECOGNISED, f"calling AE title {calling!r} is not a peer allowed to send")
        for peer, addresses in candidates:
            if ip in addresses:
                return Decision(None, peer=peer.name)
        return Decision(
            HOST_NOT_RECOGNISED,
            f"calling AE title {calling!r} connected from {ip}, not from its configured host",
        )


@dataclass(frozen=True)
class IntakePolicy:
    """Who may send and where their series go: taken once per association when it is accepted, so an open
    association finishes under the policy it started with while new ones get the one a reload put in force."""

    association: AssociationPolicy
    router: Router

    @classmethod
    def build(cls, ae_title: str, peers: Iterable[Peer], router: Router) -> IntakePolicy:
        """The policy of a node answering to ``ae_title`` and the router's called AE titles (DIMSE peers only:
        a DICOMweb peer never opens an association)."""
        dimse = [p for p in peers if isinstance(p, Peer)]
        return cls(AssociationPolicy([ae_title, *router.called_ae_titles], dimse), router)


def storage_contexts() -> list[PresentationContext]:
    """Verification plus every storage SOP class pynetdicom knows, each with :data:`TRANSFER_SYNTAXES`."""
    from pynetdicom.presentation import AllStoragePresentationContexts, build_context

    contexts = [build_context(VERIFICATION, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
    contexts.extend(
        build_context(str(cx.abstract_syntax), list(TRANSFER_SYNTAXES)) for cx in AllStoragePresentationContexts
    )
    return contexts


def contexts_in_requestor_order(
    proposed: Iterable[PresentationContext], supported: dict[str, tuple[str, ...]]
) -> list[PresentationContext]:
    """The supported contexts for the proposed abstract syntaxes, transfer syntaxes in the requestor's order.

    pynetdicom accepts, for each proposed context, the first transfer syntax *in the acceptor's list* that
    the requestor proposed; listing ours in the order the requestor proposed them (our others after) makes
    that the requestor's first choice among those we support.
    """
    from pynetdicom.presentation import build_context

    order: dict[str, list[str]] = {}
    for cx in proposed:
        abstract = str(cx.abstract_syntax)
        ours = supported.get(abstract)
        if ours is None:
            continue
        chosen = order.setdefault(abstract, [])
        chosen.extend(str(ts) for ts in cx.transfer_syntax if str(ts) in ours and str(ts) not in chosen)
    return [
        build_context(abstract, [*chosen, *(ts for ts in supported[abstract] if ts not in chosen)])
        for abstract, chosen in order.items()
    ]


class StoreSCP:
    """The pynetdicom application entity of the node, serving C-ECHO and C-STORE into a :class:`Store`."""

    def __init__(self, config: NodeConfig, store: Store, metrics: NodeMetrics | None = None) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        #: The policy in force (replaced whole by :meth:`apply_policy`; each association keeps the one it got).
        self.intake_policy = IntakePolicy.build(config.node.ae_title, config.dimse_peers, store.router)
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._tls_server: ThreadedAssociationServer | None = None
        self._threads: list[threading.Thread] = []
        self._established: set[int] = set()
        #: abstract syntax -> the transfer syntaxes we accept for it (set in :meth:`start`).
        self._supported: dict[str, tuple[str, ...]] = {}
        #: Handle C-STORE on the DUL thread (:mod:`dicom_node.intake.faststore`); False: pynetdicom's own path.
        self.fast_path = True
        self._lock = threading.Lock()

    @property
    def policy(self) -> AssociationPolicy:
        """Who may open an association now."""
        return self.intake_policy.association

    def apply_policy(self, peers: Iterable[Any], router: Router) -> None:
        """Put new peers and routing rules in force for associations accepted from now on (a reload)."""
        policy = IntakePolicy.build(self.config.node.ae_title, peers, router)  # resolves hosts: before the swap
        self.store.use_router(router)
        self.intake_policy = policy
        logger.info("association policy reloaded: answers to %s", ", ".join(sorted(policy.association.own_ae_titles)))

    @property
    def port(self) -> int:
        """The plain TCP port the SCP listens on (the configured one, or the one the OS chose for port 0)."""
        if self._server is None:
            return self.config.node.port
        return int(self._server.server_address[1])

    @property
    def tls_port(self) -> int | None:
        """The DICOM TLS port (``None`` without a TLS listener)."""
        if self._tls_server is not None:
            return int(self._tls_server.server_address[1])
        tls = self.config.tls
        return None if tls is None else tls.port

    @property
    def server(self) -> ThreadedAssociationServer | None:
        """The running pynetdicom server (tests inspect its associations' sockets)."""
        return self._server or self._tls_server

    def start(self, port: int | None = None, tls_port: int | None = None) -> None:
        """Bind and serve in background threads: the plain port and/or the TLS port (``tls`` section)."""
        from pynetdicom import AE, evt

        node = self.config.node
        ae = AE(ae_title=node.ae_title)
        ae.maximum_pdu_size = node.max_pdu
        ae.network_timeout = node.network_timeout
        ae.acse_timeout = node.network_timeout
        ae.dimse_timeout = node.network_timeout
        # The policy (EVT_REQUESTED) answers for called/calling AE titles and the concurrency limit;
        # pynetdicom's own AE title checks are off so that the routing AE titles are ours too.
        ae.require_called_aet = False
        ae.require_calling_aet = []
        ae.maximum_associations = node.max_associations * 4 + 8
        contexts = storage_contexts()
        self._supported = {str(cx.abstract_syntax): tuple(str(ts) for ts in cx.transfer_syntax) for cx in contexts}
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        self._ae = ae
        tls = self.config.tls
        if tls is not None and tls.port is not None:
            from dicom_node.core.tls import server_context

            context = server_context(tls)  # a bad certificate or key stops the start here, naming the file
            self._tls_server = self._serve(ae, tls_port if tls_port is not None else tls.port, contexts, handlers)
            self._tls_server.tls_context = context  # type: ignore[attr-defined]
            self._tls_server.on_tls_refused = self._on_tls_refused  # type: ignore[attr-defined]
            logger.info(
                "SCP %s listening with DICOM TLS on %s:%d (client certificates %s)",
                node.ae_title,
                node.host,
                self.tls_port,
                "required" if tls.require_client_certificate else "optional",
            )
        if tls is None or tls.plain_port:
            self._server = self._serve(ae, node.port if port is None else port, contexts, handlers)
            logger.info(
                "SCP %s listening on %s:%d (answers to %s)",
                node.ae_title,
                node.host,
                self.port,
                ", ".join(sorted(self.policy.own_ae_titles)),
            )

    def _serve(self, ae: AE, port: int, contexts: list[Any], handlers: list[Any]) -> ThreadedAssociationServer:
        """A pynetdicom server on ``port`` with the event-driven acceptor, served by its own thread."""
        from pynetdicom import _handlers as standard_handlers
        from pynetdicom import evt
        from pynetdicom.transport import ThreadedAssociationServer

        from dicom_node.intake.acceptor import FastRequestHandler

        node = self.config.node
        server = ThreadedAssociationServer(
            ae,
            (node.host, port),
            node.ae_title,
            contexts,
            None,  # TLS, when on, is negotiated by FastRequestHandler on the connection's own thread
            cast(Any, handlers),
            request_handler=FastRequestHandler,
        )
        # pynetdicom's standard per-PDU/per-message debug loggers cost ~10% of ingest; our handlers log.
        for event, handler in (
            (evt.EVT_DIMSE_RECV, standard_handlers.standard_dimse_recv_handler),
            (evt.EVT_DIMSE_SENT, standard_handlers.standard_dimse_sent_handler),
            (evt.EVT_PDU_RECV, standard_handlers.standard_pdu_recv_handler),
            (evt.EVT_PDU_SENT, standard_handlers.standard_pdu_sent_handler),
        ):
            server.unbind(event, handler)
        server.daemon_threads = True
        if self.fast_path:
            server.fast_store = self._receive  # type: ignore[attr-defined]
        thread = threading.Thread(target=server.serve_forever, name=f"laurel-scp-{port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        ae._servers.append(server)
        return server

    def _on_tls_refused(self) -> None:
        if self.metrics is not None:
            self.metrics.associations.labels(outcome="rejected_tls").inc()

    def stop(self, grace: float = 0.0) -> None:
        """Stop accepting (close the listening sockets), let open associations finish for up to ``grace``
        seconds (a restart for a new listener), then abort what is still open."""
        servers = [srv for srv in (self._server, self._tls_server) if srv is not None]
        self._server = self._tls_server = None
        if not servers:
            return
        if grace > 0:
            for server in servers:
                server.shutdown()
            deadline = time.monotonic() + grace
            while self._established and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._established:
                logger.warning("%d associations still open after %.0f s; aborted", len(self._established), grace)
        for server in servers:
            for assoc in list(server.active_associations):
                try:
                    assoc.abort()
                except Exception as exc:  # already gone
                    logger.debug("abort at stop: %s", exc)
            if grace <= 0:
                server.shutdown()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        logger.info("SCP stopped")

    # ------------------------------------------------------------------ handlers
    def _reject(self, assoc: Any, rejection: Rejection) -> None:
        assoc.acse.send_reject(rejection.result, rejection.source, rejection.reason)
        assoc.is_rejected = True
        from pynetdicom import evt

        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _on_requested(self, event: Event) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        called = str(getattr(rq, "called_ae_title", "") or "")
        calling = str(getattr(rq, "calling_ae_title", "") or "")
        address = str(assoc.requestor.address)
        snapshot = self.intake_policy  # one read: this association's policy, whatever a reload does later
        decision = snapshot.association.decide(called, calling, address)
        if decision.rejection is None:
            with self._lock:
                if len(self._established) >= self.config.node.max_associations:
                    decision = Decision(
                        LOCAL_LIMIT_EXCEEDED,
                        f"{self.config.node.max_associations} associations are already open",
                    )
                else:
                    self._established.add(id(assoc))
        if decision.rejection is not None:
            logger.warning(
                "association from %s (calling %r, called %r) rejected: %s",
                address,
                calling.strip(),
                called.strip(),
                decision.message,
            )
            if self.metrics is not None:
                self.metrics.associations.labels(outcome=f"rejected_{decision.rejection.label}").inc()
            self._reject(assoc, decision.rejection)
            return
        context = getattr(assoc, "context", None)
        if isinstance(context, dict):
            context.update(
                called_ae=called.strip(), calling_ae=calling.strip(), peer=decision.peer, router=snapshot.router
            )
        proposed = getattr(rq, "presentation_context_definition_list", None) or []
        assoc.acceptor.supported_contexts = contexts_in_requestor_order(proposed, self._supported)
        if self.metrics is not None:
            self.metrics.associations.labels(outcome="accepted").inc()
            self.metrics.associations_active.inc()
        logger.info("association %x from peer %s (%s) called %s", id(assoc), decision.peer, address, called.strip())

    def _on_close(self, event: Event) -> None:
        assoc = event.assoc
        with self._lock:
            was_open = id(assoc) in self._established
            self._established.discard(id(assoc))
        if not was_open:
            return
        if self.metrics is not None:
            self.metrics.associations_active.dec()
        try:
            self.store.association_closed(id(assoc))
        except Exception:
            logger.exception("could not record the end of association %x", id(assoc))

    def _on_echo(self, event: Event) -> int:
        return int(StoreStatus.SUCCESS)

    def _receive(
        self, assoc: Any, abstract_syntax: str, transfer_syntax: str, sop_class: str, sop_instance: str, data: bytes
    ) -> tuple[int, str | None]:
        """The domain call behind both C-STORE paths: store one dataset, return (status, comment)."""
        context = getattr(assoc, "context", None) or {}
        item = Incoming(
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            context_uid=abstract_syntax,
            transfer_syntax=transfer_syntax,
            data=data,
            calling_ae=context.get("calling_ae") or str(assoc.requestor.ae_title).strip(),
            called_ae=context.get("called_ae") or self.config.node.ae_title,
            association_id=id(assoc),
            max_inflated_size=self.config.node.max_inflated_size,
        )
        result = self.store.receive(item, context.get("router"))
        return int(result.status), result.comment

    def _on_store(self, event: Event) -> int | Dataset:
        """pynetdicom's EVT_C_STORE (used when the fast path hands a message over)."""
        request = event.request
        sop_instance_uid = str(getattr(request, "AffectedSOPInstanceUID", "") or "")
        try:
            stream = getattr(request, "DataSet", None)
            if not isinstance(stream, BytesIO):
                return _status(StoreStatus.CANNOT_UNDERSTAND, "the C-STORE request has no dataset")
            status, comment = self._receive(
                event.assoc,
                str(event.context.abstract_syntax),
                _transfer_syntax(event.context),
                str(getattr(request, "AffectedSOPClassUID", "") or ""),
                sop_instance_uid,
                stream.getvalue(),
            )
        except Exception:
            logger.exception("C-STORE of SOP instance %s failed", sop_instance_uid)
            return _status(StoreStatus.PROCESSING_FAILURE, "the node failed to process the request")
        if status == StoreStatus.SUCCESS:
            return int(StoreStatus.SUCCESS)
        return _status(StoreStatus(status), comment)


def _transfer_syntax(context: Any) -> str:
    """The context's transfer syntax (an event's context holds one UID, a negotiated one a list)."""
    ts = context.transfer_syntax
    return str(ts if isinstance(ts, str) else ts[0])


def _status(status: StoreStatus, comment: str | None) -> Dataset:
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = comment[:64]
    return ds
