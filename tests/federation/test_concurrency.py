"""20 concurrent uploads: every one is processed, accepted ones form one chain of versions, none is lost."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from federation.server.config import FederationConfig
from tests.federation.conftest import ServerFactory, perturbed, wait_terminal

pytestmark = pytest.mark.slow  # > 20 s on 2 cores: real validations and learning
N = 20


def test_twenty_concurrent_uploads_form_a_chain(
    start_server: ServerFactory, fed_config: Callable[..., FederationConfig], base_package: Any
) -> None:
    srv = start_server(fed_config(merge={"max_staleness": N}))
    keys = [srv.add_site(f"site-{i}") for i in range(4)]
    v0 = base_package.version

    def upload(i: int) -> str:
        client = srv.client(keys[i % len(keys)])
        return client.upload_update("leg", v0, perturbed(base_package.weights, 0.001, seed=i), n_slices=5)

    with ThreadPoolExecutor(max_workers=N) as pool:
        ids = list(pool.map(upload, range(N)))
    assert len(set(ids)) == N

    by_site = {uid: srv.client(keys[i % len(keys)]) for i, uid in enumerate(ids)}
    final = {uid: wait_terminal(client, uid, timeout=600) for uid, client in by_site.items()}
    assert all(s["state"] in {"ACCEPTED", "REJECTED"} for s in final.values()), final
    accepted = {uid for uid, s in final.items() if s["state"] == "ACCEPTED"}
    assert len(accepted) == N, {u: s["reason"] for u, s in final.items() if s["state"] != "ACCEPTED"}

    versions = srv.state.registry.versions("leg")
    assert [v.version for v in versions] == list(range(v0, v0 + N + 1))
    for parent, child in itertools.pairwise(versions):
        assert child.parent_version == parent.version
        assert len(child.merged_updates) == 1
    merged = [u for v in versions[1:] for u in v.merged_updates]
    assert sorted(merged) == sorted(accepted)  # each accepted update is in exactly one version
    assert sorted(final[u]["version"] for u in accepted) == list(range(v0 + 1, v0 + N + 1))
    staleness = sorted(s["staleness"] for s in final.values())
    assert staleness == list(range(N))  # processed one after another, each against the newest version
