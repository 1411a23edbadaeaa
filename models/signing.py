"""The signed envelope of a model package and the Ed25519 keys that sign it.

A package file is an *envelope*: ``MAGIC``, a 4-byte big-endian header length, a JSON header, then the
payload (the dill bytes). The header carries the package manifest (identity, versions), the payload's
sha256 and size, and optionally a signature: Ed25519 over ``SIGNING_CONTEXT + canonical JSON of the header
without its signature``, so it covers the manifest and, through the sha256, every payload byte.

:func:`verify` decides whether a payload may be unpickled; it reads nothing but JSON and never calls
dill. Nothing here imports TensorFlow or dill.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAGIC = b"LAURELPKG\x00"
FORMAT = "laurel-model-package/1"
SIGNING_CONTEXT = b"laurel-model-package-signature/1\n"
MAX_HEADER = 1 << 20


class PackageError(ValueError):
    """The bytes are not a well-formed model package (or do not match their own header)."""


class UntrustedPackage(PackageError):
    """A well-formed package that is unsigned, signed by an unknown key, or tampered with."""


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope: the JSON header and the (still opaque) payload bytes."""

    header: dict[str, Any]
    payload: bytes

    @property
    def manifest(self) -> dict[str, Any]:
        """Identity and versions of the package (no unpickling needed)."""
        return dict(self.header.get("manifest", {}))

    @property
    def signature(self) -> dict[str, Any] | None:
        """``{"algorithm", "key_id", "value"}`` or None for an unsigned package."""
        sig = self.header.get("signature")
        return dict(sig) if isinstance(sig, dict) else None


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def wrap(payload: bytes, manifest: dict[str, Any]) -> bytes:
    """An unsigned envelope around ``payload``."""
    header = {
        "format": FORMAT,
        "manifest": manifest,
        "payload_sha256": sha256_hex(payload),
        "payload_size": len(payload),
        "signature": None,
    }
    return _pack(header, payload)


def _pack(header: dict[str, Any], payload: bytes) -> bytes:
    head = canonical_json(header)
    return MAGIC + struct.pack(">I", len(head)) + head + payload


def parse(data: bytes) -> Envelope:
    """Split an envelope into header and payload, checking the framing and the payload's sha256/size."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PackageError("a model package must be bytes")
    data = bytes(data)
    if not data.startswith(MAGIC):
        raise PackageError("not a Laurel model package (bad magic bytes)")
    if len(data) < len(MAGIC) + 4:
        raise PackageError("truncated model package header")
    (size,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if size > MAX_HEADER or start + size > len(data):
        raise PackageError("truncated or oversized model package header")
    try:
        header = json.loads(data[start : start + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"model package header is not JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PackageError(f"unsupported model package format; expected {FORMAT}")
    payload = data[start + size :]
    if header.get("payload_size") != len(payload) or header.get("payload_sha256") != sha256_hex(payload):
        raise UntrustedPackage("payload does not match the header's sha256/size: the package was tampered with")
    return Envelope(header, payload)


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short identifier of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    return sha256_hex(public_key_bytes(public_key))[:16]


def _signed_bytes(header: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in header.items() if k != "signature"}
    return SIGNING_CONTEXT + canonical_json(unsigned)


def sign(data: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """Return the envelope ``data`` signed with ``private_key`` (an existing signature is replaced)."""
    env = parse(data)
    header = dict(env.header)
    header["signature"] = {
        "algorithm": "ed25519",
        "key_id": key_id(private_key.public_key()),
        "value": base64.b64encode(private_key.sign(_signed_bytes(header))).decode(),
    }
    return _pack(header, env.payload)


def verify(
    data: bytes, trusted_keys: Sequence[Ed25519PublicKey] = (), trusted_sha256: Collection[str] = ()
) -> Envelope:
    """Parse ``data`` and prove it trustworthy, or raise :class:`UntrustedPackage`.

    Trusted means: the payload's sha256 is in ``trusted_sha256`` (the shipped zoo), or the header carries a
    valid Ed25519 signature by one of ``trusted_keys``. Only JSON is read here.
    """
    env = parse(data)
    if env.header["payload_sha256"] in trusted_sha256:
        return env
    sig = env.signature
    if sig is None:
        raise UntrustedPackage("the package is unsigned and not part of the shipped zoo; refusing to load it")
    try:
        value = base64.b64decode(str(sig.get("value", "")), validate=True)
    except ValueError:
        raise UntrustedPackage("the package signature is not valid base64") from None
    candidates = [k for k in trusted_keys if key_id(k) == sig.get("key_id")]
    if not candidates:
        raise UntrustedPackage(f"the package is signed by key {sig.get('key_id')!r}, which is not trusted here")
    for key in candidates:
        try:
            key.verify(value, _signed_bytes(env.header))
            return env
        except InvalidSignature:
            continue
    raise UntrustedPackage("the package signature does not verify: the package was tampered with")


# --- keys -------------------------------------------------------------------------------------------


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    """A new Ed25519 signing key and its public key."""
    private = Ed25519PrivateKey.generate()
    return private, private.public_key()


def public_key_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_to_b64(public_key: Ed25519PublicKey) -> str:
    """Raw public key as base64 (44 characters), the form config files carry."""
    return base64.b64encode(public_key_bytes(public_key)).decode()


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Inverse of :func:`public_key_to_b64`."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ValueError(f"not a base64 Ed25519 public key (32 raw bytes): {exc}") from None


def private_key_to_b64(private_key: Ed25519PrivateKey) -> str:
    """Raw private key (seed) as base64. Keep it secret: never log it."""
    raw = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


def private_key_from_b64(text: str) -> Ed25519PrivateKey:
    """Inverse of :func:`private_key_to_b64`."""
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError as exc:
        raise ValueError(f"not a base64 Ed25519 private key (32 raw bytes): {exc}") from None


def public_key_to_pem(public_key: Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM."""
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_from_pem(pem: bytes) -> Ed25519PublicKey:
    """Load a PEM public key; refuses keys that are not Ed25519."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the PEM public key is not an Ed25519 key")
    return key


def private_key_to_pem(private_key: Ed25519PrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted when ``password`` is given."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def private_key_from_pem(pem: bytes, password: bytes | None = None) -> Ed25519PrivateKey:
    """Load a PKCS#8 PEM private key; refuses keys that are not Ed25519."""
    key = serialization.load_pem_private_key(pem, password=password)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the PEM private key is not an Ed25519 key")
    return key
