"""Raw HTTP/1.1 requests for hostile-client tests: a body sent slowly, cut off, or never sent."""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class RawAnswer:
    """What came back: the status (None: the connection closed without one), the raw response, bytes sent."""

    status: int | None
    response: bytes
    body_sent: int


@contextmanager
def connect(url: str, ca: Path | None = None, timeout: float = 30.0) -> Iterator[socket.socket]:
    """A connected socket to ``url``'s host (TLS verified against ``ca`` for https://)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", int(parts.port or 443)
    raw = socket.create_connection((host, port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock: socket.socket = raw
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        sock = context.wrap_socket(raw, server_hostname=host)
    try:
        yield sock
    finally:
        sock.close()


def head(path: str, headers: dict[str, str]) -> bytes:
    """The request line and headers of a POST."""
    lines = [f"POST {path} HTTP/1.1", "Host: federation.test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket, timeout: float = 30.0) -> bytes:
    """Read until the server closes or a full response (headers + Content-Length body) arrived."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk
        header, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            for line in header.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(body) >= int(value.strip()):
                    return data


def status_of(response: bytes) -> int | None:
    """The status code of a raw response."""
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response.split(b" ", 2)[1])


#: The start of a multipart upload form whose file part then runs on (boundary ``xyz``).
FORM_START = (
    b'--xyz\r\nContent-Disposition: form-data; name="weights"; filename="w.npz"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


def post_streaming(
    sock: socket.socket,
    path: str,
    headers: dict[str, str],
    *,
    body_size: int,
    chunk: int = 2**20,
    chunked: bool = False,
) -> RawAnswer:
    """Send the headers, then a multipart file part (:data:`FORM_START` and zero bytes) of ``body_size`` bytes
    until the server answers or closes; read the answer.

    The server's answer is looked for after every chunk, so a server that refuses early is seen refusing early.
    """
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(body_size)}
    sock.sendall(head(path, {"Content-Type": "multipart/form-data; boundary=xyz", **headers, **framing}))
    sent = 0
    block = FORM_START + b"\0" * (chunk - len(FORM_START))
    try:
        while sent < body_size:
            if select.select([sock], [], [], 0)[0] or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                break  # the server answered (or closed) before the body was complete
            part = block[: min(chunk, body_size - sent)]
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            sent += len(part)
            block = b"\0" * chunk
        else:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass
    response = read_answer(sock)
    return RawAnswer(status_of(response), response, sent)
