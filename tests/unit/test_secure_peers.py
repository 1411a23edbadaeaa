"""Configuration of DICOM TLS and DICOMweb peers, the TLS contexts, and the STOW-RS request and answer codecs."""

from __future__ import annotations

import ssl
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import pytest

from dicom_node.core.config import ConfigError, DicomwebPeer, NodeConfig, Peer
from dicom_node.core.tls import client_context, client_tls_args, server_context
from dicom_node.work.dicomweb import _MultipartBody, auth_headers, parse_answer


def _tls(pki: Any, **overrides: Any) -> dict[str, Any]:
    return {
        "certificate": str(pki.node.certificate),
        "private_key": str(pki.node.private_key),
        "ca_certificates": str(pki.ca),
        **overrides,
    }


def test_tls_section_and_tls_peers(pki: Any) -> None:
    peer = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 2762, "tls": True}
    cfg = NodeConfig.load(None, tls=_tls(pki), peers=[peer])
    assert cfg.tls is not None and cfg.tls.port == 2762 and cfg.tls.require_client_certificate
    server = server_context(cfg.tls)
    assert server.verify_mode == ssl.CERT_REQUIRED and server.minimum_version == ssl.TLSVersion.TLSv1_2
    args = client_tls_args(cfg.tls, cfg.dimse_peers[0])
    assert args is not None and args[1] == "127.0.0.1" and args[0].check_hostname
    assert client_tls_args(cfg.tls, Peer(name="p", ae_title="P", host="h", port=1)) is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"peers": [{"name": "p", "ae_title": "P", "host": "h", "port": 1, "tls": True}]}, "configure the tls section"),
        ({"tls": "missing-file"}, "is not a readable file"),
        ({"tls": {"port": None, "plain_port": False}}, "would not listen at all"),
        ({"tls": {"port": 11112}, "node": {"port": 11112}}, "tls.port and node.port must differ"),
    ],
)
def test_tls_configuration_mistakes_are_named(pki: Any, settings: dict[str, Any], message: str) -> None:
    if settings.get("tls") == "missing-file":
        settings = {"tls": _tls(pki, certificate="/nonexistent/node.crt")}
    elif isinstance(settings.get("tls"), dict):
        settings = {**settings, "tls": _tls(pki, **settings["tls"])}
    with pytest.raises(ConfigError, match=message):
        NodeConfig.load(None, **settings)


def test_a_key_that_does_not_match_the_certificate_is_named(pki: Any) -> None:
    cfg = NodeConfig.load(None, tls=_tls(pki, private_key=str(pki.peer.private_key)))
    assert cfg.tls is not None
    with pytest.raises(ConfigError, match="cannot be loaded"):
        client_context(cfg.tls)


def test_dicomweb_peers_are_validated_and_hide_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    web = {"name": "web", "type": "dicomweb", "url": "https://pacs.example.org/dicom-web/", "auth": "bearer"}
    with pytest.raises(ConfigError, match="auth bearer needs token_env"):
        NodeConfig.load(None, peers=[web])
    with pytest.raises(ConfigError, match="not in the URL"):
        NodeConfig.load(None, peers=[{**web, "url": "https://u:p@pacs/dicom-web", "token_env": "T"}])
    with pytest.raises(ConfigError, match="is not an http"):
        NodeConfig.load(None, peers=[{**web, "url": "ftp://pacs/dicom-web", "token_env": "T"}])
    cfg = NodeConfig.load(
        None, peers=[{**web, "token": "s3cret"}, {"name": "d", "ae_title": "D", "host": "h", "port": 1}]
    )
    peer = cfg.peer("web")
    assert isinstance(peer, DicomwebPeer) and peer.url == "https://pacs.example.org/dicom-web"
    assert not peer.send_to_us and [p.name for p in cfg.dimse_peers] == ["d"]
    assert "s3cret" not in repr(cfg) and "s3cret" not in cfg.model_dump_json()
    assert auth_headers(peer) == {"Authorization": "Bearer s3cret"}
    basic = DicomwebPeer(name="b", type="dicomweb", url="http://h/w", auth="basic", username="u", password_env="PW")
    monkeypatch.setenv("PW", "p")
    assert auth_headers(basic) == {"Authorization": "Basic dTpw"}


def test_the_multipart_body_streams_the_files_as_parts(tmp_path: Path) -> None:
    files = [tmp_path / "a.dcm", tmp_path / "b.dcm"]
    files[0].write_bytes(b"DICM" + bytes(range(256)) * 5000)
    files[1].write_bytes(b"\r\n--not-the-boundary\r\n")
    body = _MultipartBody(files, "laurel-b0undary")
    chunks = []
    while chunk := body.read(8192):
        chunks.append(chunk)
    raw = b"".join(chunks)
    assert len(raw) == len(body)
    header = b'Content-Type: multipart/related; type="application/dicom"; boundary=laurel-b0undary\r\n\r\n'
    message = BytesParser(policy=HTTP).parsebytes(header + raw)
    parts = [part.get_payload(decode=True) for part in message.iter_parts()]
    assert parts == [f.read_bytes() for f in files]


def test_the_stow_answer_is_parsed_into_stored_and_failed() -> None:
    answer = (
        b'{"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.3"]}},'
        b' {"00081155": {"vr": "UI", "Value": ["1.2.4"]}, "00081196": {"vr": "US", "Value": [45063]}}]},'
        b' "00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.5"]},'
        b' "00081197": {"vr": "US", "Value": [42752]}}, {"00081155": {"vr": "UI", "Value": ["1.2.6"]}}]}}'
    )
    stored, failed = parse_answer(answer)
    assert stored == {"1.2.3": None, "1.2.4": 0xB007}
    assert failed == {"1.2.5": 0xA700, "1.2.6": 0x0110}
    with pytest.raises(ValueError):
        parse_answer(b'"just a string"')
