"""Validate → merge → validate → publish, on real packages and the private reference set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from federation.server.config import FederationConfig
from models import aggregation
from tests.federation.conftest import ServerFactory, perturbed, wait_terminal


def _all_background(pkg: Any) -> list[np.ndarray]:
    """Weights whose output layer votes background everywhere: a candidate that segments nothing."""
    weights = [w.copy() for w in pkg.weights]
    bias = pkg.weight_names.index("head_conv/bias")
    weights[bias][0] += 1000.0
    return weights


def test_candidate_below_threshold_is_rejected_with_reason_and_dice(
    start_server: ServerFactory, fed_config: Callable[..., FederationConfig], base_package: Any
) -> None:
    srv = start_server(fed_config(validation={"threshold": 0.05}))
    client = srv.client(srv.add_site("a"))
    uid = client.upload_update("leg", base_package.version, _all_background(base_package), n_slices=6)
    status = wait_terminal(client, uid)
    assert status["state"] == "REJECTED"
    assert status["candidate_dice"] == pytest.approx(0.0, abs=1e-6)
    assert "below the threshold 0.05" in status["reason"]
    assert status["merged_dice"] is None and status["version"] is None
    assert client.latest_version("leg") == base_package.version


def test_merge_that_regresses_beyond_tolerance_is_rejected(
    start_server: ServerFactory,
    fed_config: Callable[..., FederationConfig],
    base_package: Any,
    base_dice: float,
) -> None:
    srv = start_server(fed_config(validation={"threshold": 0.0, "tolerance": 0.01}))
    client = srv.client(srv.add_site("a"))
    uid = client.upload_update("leg", base_package.version, _all_background(base_package), n_slices=6)
    status = wait_terminal(client, uid)
    assert status["state"] == "REJECTED", status
    assert "regresses" in status["reason"] and "tolerance 0.010" in status["reason"]
    assert status["current_dice"] == pytest.approx(base_dice)
    assert status["merged_dice"] < base_dice - 0.01
    assert client.latest_version("leg") == base_package.version


def test_linear_merge_is_dafnes_half_and_half(
    start_server: ServerFactory, fed_config: Callable[..., FederationConfig], base_package: Any
) -> None:
    srv = start_server(fed_config(validation={"threshold": 0.0, "tolerance": 1.0}))
    client = srv.client(srv.add_site("a"))
    cand = perturbed(base_package.weights, 0.02, seed=1)
    status = wait_terminal(client, client.upload_update("leg", base_package.version, cand, n_slices=6))
    assert status["state"] == "ACCEPTED" and status["version"] == base_package.version + 1
    merged = client.download("leg", status["version"])
    expected = aggregation.linear_merge(base_package.weights, cand, 0.5)
    for got, want in zip(merged.weights, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert merged.parent_version == base_package.version
    assert merged.metadata["federation"]["update"] == status["update_id"]
    info = client.model_info("leg")
    assert info["versions"][-1]["merged_updates"] == [status["update_id"]]
    assert info["versions"][-1]["parent_version"] == base_package.version


def test_delta_strategy_discounts_stale_updates_and_staleness_limit(
    start_server: ServerFactory, fed_config: Callable[..., FederationConfig], base_package: Any
) -> None:
    srv = start_server(
        fed_config(
            validation={"threshold": 0.0, "tolerance": 1.0},
            merge={"strategy": "delta", "weight": 0.5, "staleness_discount": 0.5, "max_staleness": 1},
        )
    )
    client = srv.client(srv.add_site("a"))
    v0 = base_package.version
    first, second, third = (perturbed(base_package.weights, 0.02, seed=s) for s in (1, 2, 3))
    ids = [client.upload_update("leg", v0, w, n_slices=6) for w in (first, second, third)]
    done = [wait_terminal(client, i) for i in ids]
    assert [d["state"] for d in done] == ["ACCEPTED", "ACCEPTED", "REJECTED"]
    assert [d["staleness"] for d in done] == [0, 1, 2]
    assert "stale" in done[2]["reason"] and "limit 1" in done[2]["reason"]
    v1 = aggregation.delta_merge(base_package.weights, base_package.weights, first, 0, 0.5, 0.5)
    v2 = aggregation.delta_merge(v1, base_package.weights, second, 1, 0.5, 0.5)
    got = client.download("leg", v0 + 2)
    for g, want in zip(got.weights, v2, strict=True):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_partial_strategy_averages_the_encoder_and_takes_the_task_block_from_the_site(
    start_server: ServerFactory, fed_config: Callable[..., FederationConfig], base_package: Any
) -> None:
    srv = start_server(
        fed_config(validation={"threshold": 0.0, "tolerance": 1.0}, merge={"strategy": "partial", "weight": 0.5})
    )
    client = srv.client(srv.add_site("a"))
    cand = perturbed(base_package.weights, 0.02, seed=4)
    status = wait_terminal(client, client.upload_update("leg", base_package.version, cand, n_slices=6))
    assert status["state"] == "ACCEPTED"
    got = client.download("leg", status["version"])
    for name, g, b, c in zip(base_package.weight_names, got.weights, base_package.weights, cand, strict=True):
        want = (0.5 * b.astype(np.float64) + 0.5 * c).astype(b.dtype) if name.startswith("enc") else c
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_queued_updates_survive_a_restart(
    start_server: ServerFactory, fed_config: Callable[..., FederationConfig], base_package: Any, tmp_path: Any
) -> None:
    cfg = fed_config(data_dir=tmp_path / "durable", validation={"threshold": 0.0, "tolerance": 1.0})
    first = start_server(cfg, start_worker=False)
    key = first.add_site("a")
    client = first.client(key)
    ids = [
        client.upload_update("leg", base_package.version, perturbed(base_package.weights, 0.01, seed=s), n_slices=6)
        for s in range(3)
    ]
    assert [client.update_status(i)["state"] for i in ids] == ["QUEUED"] * 3
    first.stop()

    second = start_server(cfg)  # same data dir: same registry, key and queue
    client = second.client(key)
    done = [wait_terminal(client, i) for i in ids]
    assert [d["state"] for d in done] == ["ACCEPTED"] * 3
    assert [d["version"] for d in done] == [base_package.version + k for k in (1, 2, 3)]
    assert client.health()["public_key"] == first.state.server_key.public_b64()


def test_an_update_a_version_already_merged_is_not_merged_again(
    start_server: ServerFactory, fed_config: Callable[..., FederationConfig], base_package: Any, tmp_path: Any
) -> None:
    """What a crash between publishing and recording the outcome left in 0.1: the version lists the update,
    the update is still VALIDATING. The restart records the outcome and publishes nothing more."""
    from federation.server.registry import VALIDATING

    cfg = fed_config(data_dir=tmp_path / "crashed", validation={"threshold": 0.0, "tolerance": 1.0})
    first = start_server(cfg, start_worker=False)
    key = first.add_site("a")
    client = first.client(key)
    uid = client.upload_update("leg", base_package.version, perturbed(base_package.weights, 0.01), n_slices=6)
    state = first.state
    update = state.registry.claim_next()
    assert update is not None and update.uid == uid and update.state == VALIDATING
    merged = base_package.with_weights(
        perturbed(base_package.weights, 0.01), version=base_package.version + 1, parent_version=base_package.version
    )
    state.processor._publish(
        "leg",
        merged,
        state.processor._validate("leg", merged, "merged"),
        parent=base_package.version,
        merged_updates=[uid],
        strategy="linear",
    )  # published, and then the process died before the update was marked
    first.stop()
    second = start_server(cfg)
    client = second.client(key)
    done = wait_terminal(client, uid)
    assert done["state"] == "ACCEPTED" and done["version"] == base_package.version + 1
    versions = client.model_info("leg")["versions"]
    assert [v["version"] for v in versions] == [base_package.version, base_package.version + 1]
    assert [u for v in versions for u in v["merged_updates"]] == [uid]
