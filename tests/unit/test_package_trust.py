"""Trust: a package is unpickled only when signed by a trusted key or listed in the shipped zoo manifest."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest

from models import package, signing
from tests.helpers_models import tiny_package


class _WritesMarker:
    """A pickle payload that creates a file when unpickled: proof that nothing was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path, str]]:
        return (Path.write_text, (self.marker, "pwned"))  # type: ignore[return-value]


def _evil_payload(marker: Path) -> bytes:
    return pickle.dumps(_WritesMarker(marker))


def _reframe(header: dict[str, object], payload: bytes) -> bytes:
    head = signing.canonical_json(header)
    return signing.MAGIC + struct.pack(">I", len(head)) + head + payload


@pytest.fixture(scope="module")
def signed() -> tuple[bytes, object, object]:
    priv, pub = signing.generate_keypair()
    return package.sign(package.dumps(tiny_package()), priv), priv, pub


def test_the_evil_payload_really_runs_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pickle.loads(_evil_payload(marker))  # noqa: S301 - the point of the test
    assert marker.read_text() == "pwned"


def test_signed_package_loads_with_its_key(signed: tuple[bytes, object, object]) -> None:
    data, _, pub = signed
    pkg = package.load(data, [pub])
    assert pkg.version == tiny_package().version
    assert package.read_manifest(data)["signed_by"] == signing.key_id(pub)  # type: ignore[arg-type]


def test_unsigned_and_unknown_key_are_refused(signed: tuple[bytes, object, object]) -> None:
    data, _, pub = signed
    with pytest.raises(package.UntrustedPackage, match="unsigned"):
        package.load(package.dumps(tiny_package()), [pub])
    _, other = signing.generate_keypair()
    with pytest.raises(package.UntrustedPackage, match="not trusted"):
        package.load(data, [other])
    with pytest.raises(package.UntrustedPackage):
        package.load(data, [])


def test_tampered_package_is_refused_without_running_it(signed: tuple[bytes, object, object], tmp_path: Path) -> None:
    data, priv, pub = signed
    env = signing.parse(data)
    marker = tmp_path / "ran"
    evil = _evil_payload(marker)
    # 1. payload swapped, header untouched: sha256 mismatch
    with pytest.raises(package.UntrustedPackage, match="tampered"):
        package.load(_reframe(env.header, evil), [pub])
    # 2. payload swapped and the header's sha256/size updated: the signature no longer verifies
    forged = {**env.header, "payload_sha256": signing.sha256_hex(evil), "payload_size": len(evil)}
    with pytest.raises(package.UntrustedPackage, match="does not verify"):
        package.load(_reframe(forged, evil), [pub])
    # 3. unsigned evil envelope
    with pytest.raises(package.UntrustedPackage, match="unsigned"):
        package.load(signing.wrap(evil, {"name": "evil"}), [pub])
    # 4. one flipped payload byte, and a changed manifest (version bump) under the old signature
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    with pytest.raises(package.UntrustedPackage):
        package.load(bytes(flipped), [pub])
    bumped = {**env.header, "manifest": {**env.manifest, "version": 99}}
    with pytest.raises(package.UntrustedPackage, match="does not verify"):
        package.load(_reframe(bumped, env.payload), [pub])
    assert not marker.exists()
    del priv


def test_garbage_is_a_package_error() -> None:
    for bad in (b"", b"not a package", signing.MAGIC + b"\x00\x00\x00\x05{bad}"):
        with pytest.raises(package.PackageError):
            package.load(bad)


def test_zoo_packages_are_trusted_by_manifest_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = package.dumps(tiny_package())
    manifest = tmp_path / "manifest.json"
    sha = signing.parse(data).header["payload_sha256"]
    manifest.write_text(json.dumps({"packages": {"tiny": {"file": "tiny.laurel", "payload_sha256": sha}}}))
    monkeypatch.setattr(package, "ZOO_MANIFEST", manifest)
    assert package.load(data).version == 0
    assert package.read_manifest(data)["zoo"] is True
    with pytest.raises(package.UntrustedPackage):
        package.load(data, allow_zoo=False)


def test_key_serialisation_round_trips() -> None:
    priv, pub = signing.generate_keypair()
    msg = b"laurel"
    sig = priv.sign(msg)
    signing.public_key_from_b64(signing.public_key_to_b64(pub)).verify(sig, msg)
    signing.public_key_from_pem(signing.public_key_to_pem(pub)).verify(sig, msg)
    again = signing.private_key_from_b64(signing.private_key_to_b64(priv))
    assert signing.key_id(again.public_key()) == signing.key_id(pub)
    enc = signing.private_key_to_pem(priv, password=b"secret")
    assert b"ENCRYPTED" in enc
    assert signing.key_id(signing.private_key_from_pem(enc, b"secret").public_key()) == signing.key_id(pub)
    with pytest.raises(ValueError, match="Ed25519"):
        signing.public_key_from_b64("AAAA")
