"""DICOM TLS (PS3.15 Annex B, the BCP 195 profile): the contexts of the node's listener and of its TLS peers.

Both sides use TLS 1.2 or newer with Python's default (BCP 195 compatible) cipher suites. The node's
certificate and key (``tls.certificate``, ``tls.private_key``) are presented on both sides; the peer's
certificate must be signed by one of ``tls.ca_certificates``. A listener with
``tls.require_client_certificate`` refuses a sender without such a certificate during the handshake. At
write-back the peer's certificate must also name the peer (``tls_server_name``, default: its host).

:func:`server_handshake` runs the server side of a handshake on an accepted socket within a deadline, so a
peer that connects and stalls costs one thread for ``network_timeout`` at most and never the accept loop.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import time
from typing import Any

from dicom_node.core.config import Peer, TlsSection
from dicom_node.core.errors import ConfigError

logger = logging.getLogger(__name__)


class HandshakeFailed(Exception):
    """The TLS handshake with a peer failed or ran out of time (the message says which)."""


def _load_identity(context: ssl.SSLContext, tls: TlsSection) -> None:
    try:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"tls.certificate {tls.certificate} and tls.private_key {tls.private_key} cannot be loaded "
            f"(PEM, unencrypted key that matches the certificate): {exc}"
        ) from exc
    try:
        context.load_verify_locations(cafile=str(tls.ca_certificates))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"tls.ca_certificates {tls.ca_certificates} cannot be loaded (PEM): {exc}") from exc


def server_context(tls: TlsSection) -> ssl.SSLContext:
    """The listener's context; raises :class:`ConfigError` naming the file that cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(context, tls)
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    return context


def client_context(tls: TlsSection) -> ssl.SSLContext:
    """The context for associations with TLS peers (their certificate and name are verified)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(context, tls)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls_args(tls: TlsSection | None, peer: Peer) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for an association with ``peer`` (``None``: a plain connection)."""
    if not peer.tls:
        return None
    if tls is None:
        raise ConfigError(f"peer {peer.name} uses TLS but the tls section is not configured")
    return client_context(tls), peer.tls_server_name or peer.host


def server_handshake(context: ssl.SSLContext, sock: socket.socket, timeout: float | None) -> ssl.SSLSocket:
    """Wrap an accepted socket and complete the handshake within ``timeout`` seconds (all of it, not per read).

    The returned socket is blocking, like the one given. Raises :class:`HandshakeFailed` (the socket is
    then closed) when the peer is not TLS, presents no or an untrusted certificate, or stalls.
    """
    tls_sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    deadline = None if timeout is None else time.monotonic() + timeout
    tls_sock.setblocking(False)
    try:
        while True:
            try:
                tls_sock.do_handshake()
                break
            except ssl.SSLWantReadError:
                readable, writable = [tls_sock], []
            except ssl.SSLWantWriteError:
                readable, writable = [], [tls_sock]
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise HandshakeFailed(f"the TLS handshake did not complete within {timeout:g} s")
            r, w, _ = select.select(readable, writable, [], remaining)
            if not r and not w:
                raise HandshakeFailed(f"the TLS handshake did not complete within {timeout:g} s")
    except HandshakeFailed:
        tls_sock.close()
        raise
    except (ssl.SSLError, OSError) as exc:
        tls_sock.close()
        raise HandshakeFailed(f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}") from exc
    tls_sock.setblocking(True)
    return tls_sock


def peer_subject(sock: ssl.SSLSocket) -> str:
    """The common name of the certificate a peer presented ("" when none)."""
    cert: dict[str, Any] = dict(sock.getpeercert() or {})
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def probe(tls: TlsSection | None, peer: Peer, timeout: float) -> str:
    """Why a TLS connection to ``peer`` fails, in words ("" when a handshake succeeds): for error messages."""
    try:
        args = client_tls_args(tls, peer)
    except ConfigError as exc:
        return str(exc)
    if args is None:
        return ""
    context, server_name = args
    try:
        with (
            socket.create_connection((peer.host, peer.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name),
        ):
            return ""
    except ssl.SSLCertVerificationError as exc:
        return f"the peer's certificate is not trusted: {exc.verify_message}"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc.reason or exc}"
    except OSError as exc:
        return f"not reachable: {exc}"
