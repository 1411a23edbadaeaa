"""The federation server against a hostile network (in-process server): body limits while streaming, failed
authentication rate limits, per-site upload slots, pseudonymous site ids, the audit log, the node's transport."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
import requests
from argon2 import PasswordHasher

from federation.client import encode_weights
from federation.server.config import FederationConfig
from tests.federation.conftest import ServerFactory
from tests.federation.rawhttp import connect, head, post_streaming
from tests.peers import wait_until


def _meta(version: int) -> str:
    return json.dumps(
        {"model": "leg", "base_version": version, "n_slices": 6, "local_dice": 0.8, "client_version": "t"}
    )


def _kernel_buffers() -> int:
    """The most loopback TCP can hold between a sender and a reader that stopped (tcp_rmem + tcp_wmem maxima)."""
    total = 0
    for name in ("tcp_rmem", "tcp_wmem"):
        total += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[-1])
    return total


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(
    start_server: ServerFactory, fed_config: Callable[..., FederationConfig], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="federation.server.limits")
    srv = start_server(fed_config(server={"max_upload_mb": 1, "max_request_kb": 16}))
    key = srv.add_site("chunky")
    auth = {"Authorization": f"Bearer {key}"}
    slack = _kernel_buffers()  # what the kernel may absorb after the server stops reading (36 MiB here)
    body = 2 * 2**20 + slack + 64 * 2**20
    with connect(srv.url) as sock:
        answer = post_streaming(sock, "/api/v1/updates", auth, body_size=body, chunk=2**16, chunked=True)
    assert answer.status == 413, answer.response[:300]
    assert b"exceeds" in answer.response
    read = [int(m) for m in re.findall(r"read (\d+) bytes, limit", caplog.text)]
    # the server read the limit and what its HTTP layer had buffered (a few chunks), not the 64+ MiB sent
    assert read and read[0] <= 3 * 2**20, caplog.text
    assert answer.body_sent < 2 * 2**20 + slack + 2**20  # the answer came (and the sender stopped) long before the end
    # any other body (statistics) has its own, smaller limit, checked from Content-Length
    with connect(srv.url) as sock:
        answer = post_streaming(sock, "/api/v1/stats", {"Authorization": f"Bearer {key}"}, body_size=2**20)
    assert answer.status == 413 and b"request body of 1048576 bytes exceeds 16384 bytes" in answer.response
    assert srv.state.registry.list_updates() == []


def test_failed_authentication_is_rate_limited_per_prefix_and_per_address(
    start_server: ServerFactory, fed_config: Callable[..., FederationConfig]
) -> None:
    srv = start_server(fed_config(server={"auth_max_failures": 3, "auth_failure_window_seconds": 600}))
    key = srv.add_site("victim")
    prefix = key.split("_")[1]
    hashed: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            hashed.append(str(password)[:16])
            return super().verify(hash, password)

    srv.state.keys.hasher = CountingHasher()
    models = f"{srv.url}/api/v1/models"
    good = requests.get(models, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert good.status_code == 200 and len(hashed) == 1  # verified once, then cached

    wrong = f"lfk_{prefix}_{'x' * 43}"
    codes = [requests.get(models, headers={"Authorization": f"Bearer {wrong}"}, timeout=30) for _ in range(5)]
    assert [r.status_code for r in codes] == [401, 401, 401, 429, 429]
    assert int(codes[3].headers["Retry-After"]) > 0 and "too many failed" in codes[3].json()["detail"]
    assert len(hashed) == 1 + 3  # argon2 ran for the first three failures only
    # the site's own key, verified before the attack, still gets in (the cache of verified keys)
    assert requests.get(models, headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code == 200
    assert len(hashed) == 4

    # per address: the failures above (and unknown prefixes, which cost no argon2) count against the address,
    # so another site's key, not verified yet, is refused from here before argon2 runs
    other = srv.add_site("other")
    for n in range(3):
        r = requests.get(models, headers={"Authorization": f"Bearer lfk_{n:012x}_{'y' * 43}"}, timeout=30)
        assert r.status_code in (401, 429)
    r = requests.get(models, headers={"Authorization": f"Bearer {other}"}, timeout=30)
    assert r.status_code == 429 and "this address" in r.json()["detail"]
    assert len(hashed) == 4
    metrics = requests.get(f"{srv.url}/metrics", timeout=10).text
    assert "laurel_fed_auth_throttled_total 3.0" in metrics


def test_concurrent_uploads_of_a_site_are_limited(
    start_server: ServerFactory, fed_config: Callable[..., FederationConfig], base_package: Any
) -> None:
    srv = start_server(fed_config(server={"max_concurrent_uploads_per_site": 1}), start_worker=False)
    key_a, key_b = srv.add_site("slow-a"), srv.add_site("b")
    site_a = next(s for s in srv.state.keys.sites() if s.name == "slow-a")
    body = encode_weights(base_package.weights)
    headers = {"Authorization": f"Bearer {key_a}", "Content-Type": "multipart/form-data; boundary=xyz"}
    with connect(srv.url) as sock:
        # the first upload of slow-a sends its headers and a little of its body, then stalls
        sock.sendall(head("/api/v1/updates", {**headers, "Content-Length": str(len(body) + 10_000)}))
        sock.sendall(b"--xyz\r\n")
        wait_until(lambda: srv.state.upload_slots.active(site_a.id) == 1, 30, 0.02, "the stalled upload to hold a slot")
        second = requests.post(
            f"{srv.url}/api/v1/updates",
            headers={"Authorization": f"Bearer {key_a}"},
            files={"weights": ("w.npz", body, "application/octet-stream")},
            data={"metadata": _meta(base_package.version)},
            timeout=30,
        )
        assert second.status_code == 429, second.text
        assert "already has 1 upload(s) in progress" in second.json()["detail"] and second.headers["Retry-After"]
    # b's uploads are not limited by slow-a's
    uid = srv.client(key_b).upload_update("leg", base_package.version, base_package.weights, n_slices=4)
    assert srv.state.registry.get_update(uid).state == "QUEUED"
    wait_until(lambda: srv.state.upload_slots.active(site_a.id) == 0, 30, 0.05, "the cut-off upload to free its slot")
    uid = srv.client(key_a).upload_update("leg", base_package.version, base_package.weights, n_slices=4)
    assert srv.state.registry.get_update(uid).state == "QUEUED"
