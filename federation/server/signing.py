"""The server's Ed25519 key: created once, kept in a PEM file readable only by its owner.

Every package the server publishes is a signed envelope (``models.package.sign``); nodes verify it with
the public key printed by ``laurel federation public-key`` before dill reads a byte.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerKey:
    """The server's signing key pair."""

    private_key: Ed25519PrivateKey
    path: Path

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half, for nodes' configs."""
        return self.private_key.public_key()

    def public_b64(self) -> str:
        """The raw 32-byte public key, base64: the form ``federation.server_public_key`` takes."""
        raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")

    def public_pem(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo)."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def sign_package(self, package_bytes: bytes) -> bytes:
        """A signed envelope of serialized package bytes (the models' envelope format)."""
        from federation.server import modelapi

        return modelapi.sign(package_bytes, self.private_key)


def load_or_create(path: Path, *, create: bool = True) -> ServerKey:
    """Read the key from ``path``; create it (mode 0600) when absent and ``create`` is set."""
    path = Path(path)
    if path.exists():
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return ServerKey(loaded, path)
    if not create:
        raise FileNotFoundError(f"no server key at {path}; run `laurel federation keygen --config …`")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    log.info("created the server signing key at %s", path)
    return ServerKey(key, path)
