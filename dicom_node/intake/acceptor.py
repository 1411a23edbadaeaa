"""The request handler of the node's DICOM listeners: socket options, the TLS handshake, then an
:class:`~dicom_node.intake.fastnet.EventDrivenAssociation` (with the C-STORE fast path of
:mod:`dicom_node.intake.faststore` when the server has a ``fast_store`` callback).
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicom_node.intake.fastnet import EventDrivenAssociation, EventDrivenDUL
from dicom_node.intake.faststore import FastStorePath
from dicom_node.intake.netguard import configure_socket

logger = logging.getLogger(__name__)


class FastRequestHandler(RequestHandler):
    """Creates :class:`EventDrivenAssociation` acceptors on sockets set up by :func:`configure_socket`.

    On a server with a ``tls_context`` the TLS handshake runs here, on the connection's own thread and
    within ``network_timeout`` (:func:`dicom_node.core.tls.server_handshake`), before any PDU is read: a
    peer that is not TLS, has no trusted certificate or stalls is logged and disconnected.
    """

    def handle(self) -> None:
        """Set up the socket (TCP options, then TLS when the server has a context) and serve the association."""
        request = cast(socket.socket, self.request)
        configure_socket(request, self.ae.network_timeout)
        context = getattr(self.server, "tls_context", None)
        if context is not None:
            from dicom_node.core.tls import HandshakeFailed, peer_subject, server_handshake

            try:
                self.request = server_handshake(context, request, self.ae.network_timeout)
            except HandshakeFailed as exc:
                where = f"{self.client_address[0]}:{self.client_address[1]}"
                logger.warning("TLS connection from %s refused: %s", where, exc)
                on_refused = getattr(self.server, "on_tls_refused", None)
                if on_refused is not None:
                    on_refused()
                return
            logger.debug("TLS connection from %s, certificate %r", self.client_address[0], peer_subject(self.request))
        super().handle()

    def _create_association(self) -> Association:
        request = cast(socket.socket, self.request)
        assoc = EventDrivenAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        # pynetdicom counts acceptors by this thread name prefix (maximum_associations).
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        sock = AssociationSocket(assoc, client_socket=request)
        assoc.set_socket(sock)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        # Shared, read-only: pynetdicom deep-copies these per association, which costs ~10 ms for 170 classes.
        assoc.acceptor.supported_contexts = self.server.contexts
        assoc.requestor.address_info = self.remote
        dul = cast(EventDrivenDUL, assoc.dul)
        dul.max_pdu = int(self.ae.maximum_pdu_size or 0)
        fast_store = getattr(self.server, "fast_store", None)
        if fast_store is not None:
            dul.fast_path = FastStorePath(fast_store, assoc, dul.send_raw)
        for event in self.server._handlers:
            if event.is_intervention and self.server._handlers[event]:
                assoc.bind(event, *self.server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in self.server._handlers[event]:
                    handler = cast(Any, handler)
                    assoc.bind(event, handler[0], handler[1])
        return assoc
