"""A test PKI for DICOM TLS, made with ``cryptography``: a CA, the node's and a peer's certificates, and a
certificate of a CA nobody trusts. Every leaf names ``localhost`` and ``127.0.0.1`` and serves as both
server and client certificate. RSA 2048 keys: what DCMTK's BCP 195 profile negotiates.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Credentials:
    """A certificate and its private key (PEM files)."""

    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class Pki:
    """The files of a test PKI."""

    ca: Path
    node: Credentials
    peer: Credentials
    rogue: Credentials  # signed by a CA that is not ``ca``
    rogue_ca: Path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Laurel tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(directory: Path, name: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey, Path]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key, _write_cert(cert, directory / f"{name.replace(' ', '_')}.crt")


def _leaf(directory: Path, name: str, ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey) -> Credentials:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Credentials(_write_cert(cert, directory / f"{name}.crt"), _write_key(key, directory / f"{name}.key"))


def make_pki(directory: Path) -> Pki:
    """Write a CA, the node's and a peer's certificates, and a rogue CA and certificate into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key, ca_path = _ca(directory, "Laurel Test CA")
    rogue_cert, rogue_key, rogue_ca_path = _ca(directory, "Unknown CA")
    return Pki(
        ca=ca_path,
        node=_leaf(directory, "node", ca_cert, ca_key),
        peer=_leaf(directory, "peer", ca_cert, ca_key),
        rogue=_leaf(directory, "rogue", rogue_cert, rogue_key),
        rogue_ca=rogue_ca_path,
    )
