"""The federation server stopped (SIGTERM or SIGKILL) while validating, merging and publishing an update:
after each restart the update is processed again, and in the end it is merged exactly once."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

from tests.peers import wait_until
from tests.restart.harness import FederationServer

pytestmark = [pytest.mark.slow]

STEPS = ("federation.validating", "federation.merging", "federation.publishing")


def _uploads(fed: FederationServer) -> list[Path]:
    return sorted((fed.workdir / "data" / "uploads").rglob("*.npz"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_an_update_is_merged_once_whatever_stops_the_server(
    sig: signal.Signals, tmp_path: Path, restart_reference: Path
) -> None:
    fed = FederationServer(tmp_path / "fed", restart_reference, threshold=0.0)
    key = fed.add_site("hospital-a")
    fed.start(hold=[STEPS[0]])  # the first start publishes the zoo package as version 1
    client = fed.client(key)
    try:
        base = client.latest_version("leg")
        pkg = client.download("leg", base)
        rng = np.random.default_rng(7)
        weights = [(w * (1 + 0.001 * rng.standard_normal(w.shape))).astype(w.dtype) for w in pkg.weights]
        uid = client.upload_update("leg", base, weights, n_slices=4, local_dice=0.8, idempotency_key="restart-test-1")
        stored = _uploads(fed)
        assert len(stored) == 1
        for step, following in zip(STEPS, [*STEPS[1:], None], strict=True):
            fed.wait_point(step)
            assert client.update_status(uid)["state"] == "VALIDATING"
            fed.stop_with(sig)
            fed.start(hold=[following] if following else [])
        done = wait_until(
            lambda: (s := client.update_status(uid))["state"] in {"ACCEPTED", "REJECTED", "FAILED"} and s,
            240,
            0.2,
            "the update to finish after the last restart",
        )
        assert done["state"] == "ACCEPTED", done["reason"]
        info = client.model_info("leg")
        versions = [v["version"] for v in info["versions"]]
        merged = [u for v in info["versions"] for u in v["merged_updates"]]
        assert versions == [base, base + 1] and done["version"] == base + 1
        assert merged == [uid]  # one merge of one update, through three stops
        # The node's retry after a lost answer: the same update, nothing stored again.
        again = client.upload_update("leg", base, weights, n_slices=4, local_dice=0.8, idempotency_key="restart-test-1")
        assert again == uid and _uploads(fed) == stored
        # A replay of the key with other weights is refused and leaves no file behind.
        from federation.client import FederationRefused

        with pytest.raises(FederationRefused) as refused:
            client.upload_update(
                "leg", base, [w * 1.01 for w in weights], n_slices=4, local_dice=0.8, idempotency_key="restart-test-1"
            )
        assert refused.value.status == 409 and _uploads(fed) == stored
        print(f"{sig.name}: stopped at {', '.join(STEPS)}; versions {versions}; merged_updates {merged}")
    finally:
        fed.stop()
