"""Acceptance: two sites learn from their own phantom studies, the server validates and merges both
updates, both sites pull the new version, and the validation Dice history is monotone within tolerance."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from federation.client import FederationClient
from federation.server.config import FederationConfig
from federation.server.schemas import ALLOWED_METADATA_KEYS
from tests.federation.conftest import ServerFactory, wait_terminal

pytestmark = pytest.mark.slow  # > 20 s on 2 cores: real validations and learning
SITE_SLICES = 6


def _record_uploads(client: FederationClient) -> list[requests.PreparedRequest]:
    """Keep every upload request exactly as it went on the wire."""
    sent: list[requests.PreparedRequest] = []

    def hook(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        if resp.request.method == "POST" and resp.request.url.endswith("/api/v1/updates"):
            sent.append(resp.request)

    client.session.hooks["response"].append(hook)
    return sent


def _parts(req: requests.PreparedRequest) -> dict[str, bytes]:
    body = req.body if isinstance(req.body, bytes) else str(req.body).encode()
    head = f"Content-Type: {req.headers['Content-Type']}\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + body)
    return {
        str(p.get_param("name", header="content-disposition")): p.get_payload(decode=True) for p in msg.iter_parts()
    }


@pytest.fixture(scope="module")
def mixed_reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's reference set for this scenario: one PD and one T1 subject (the sites scan T1)."""
    from models.phantom import cohort, generate

    root = tmp_path_factory.mktemp("reference-mixed")
    (root / "leg").mkdir()
    for contrast, spec in zip(("pd", "t1"), cohort("reference_pd_leg", 2), strict=True):
        ph = generate(dataclasses.replace(spec, n_slices=4, contrast=contrast))
        np.savez(root / "leg" / f"{contrast}.npz", image=ph.image, labels=ph.labels, spacing=np.asarray(ph.spacing))
    return root


def _site_learns(client: FederationClient, version: int, cohort_name: str) -> tuple[str, Any]:
    """What a node does after an approval: learn from the approved study on the pulled version, upload."""
    from models.metrics import dice
    from models.phantom import cohort, generate

    pkg = client.download("leg", version)
    ph = generate(dataclasses.replace(cohort(cohort_name, 1)[0], n_slices=SITE_SLICES))
    draft = pkg.apply(ph.image, ph.spacing)
    local = dice(draft, ph.labels, [lab["value"] for lab in pkg.labels])["overall"]
    learned = pkg.learn(ph.image, ph.labels, ph.spacing)  # the operator's approved labels
    uid = client.upload_update(
        "leg", version, learned.weights, n_slices=SITE_SLICES, local_dice=local, layer_names=pkg.weight_names
    )
    client.post_stats("leg", version, local, n_slices=SITE_SLICES)
    return uid, ph


def test_two_sites_learn_merge_and_pull(
    start_server: ServerFactory,
    fed_config: Callable[..., FederationConfig],
    base_package: Any,
    mixed_reference_dir: Path,
) -> None:
    # Dafne's threshold; learning a new contrast costs a little PD accuracy, hence a 0.05 tolerance.
    cfg = fed_config(validation={"validation_dir": str(mixed_reference_dir), "threshold": 0.7, "tolerance": 0.05})
    srv = start_server(cfg)
    site_a = srv.client(srv.add_site("hospital-a"))
    site_b = srv.client(srv.add_site("hospital-b"))
    wire = _record_uploads(site_a)

    v0 = site_a.latest_version("leg")
    assert v0 == site_b.latest_version("leg") == base_package.version
    uid_a, phantom_a = _site_learns(site_a, v0, "site_a_t1_leg")
    uid_b, _ = _site_learns(site_b, v0, "site_b_t1_leg")
    status_a, status_b = wait_terminal(site_a, uid_a), wait_terminal(site_b, uid_b)
    assert (status_a["state"], status_b["state"]) == ("ACCEPTED", "ACCEPTED"), (
        status_a["reason"],
        status_b["reason"],
    )
    assert (status_a["version"], status_b["version"]) == (v0 + 1, v0 + 2)
    assert (status_a["staleness"], status_b["staleness"]) == (0, 1)

    # Both sites pull the same, newest version, and it verifies against the server's key.
    latest_a, latest_b = site_a.latest_version("leg"), site_b.latest_version("leg")
    assert latest_a == latest_b == status_b["version"]
    pulled_a, pulled_b = site_a.download("leg", latest_a), site_b.download("leg", latest_b)
    assert pulled_a.version == pulled_b.version == latest_a
    for wa, wb in zip(pulled_a.weights, pulled_b.weights, strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(w, b) for w, b in zip(pulled_a.weights, base_package.weights, strict=True))

    # The history: a chain from the zoo version, Dice monotone within the tolerance.
    info = site_a.model_info("leg")
    tolerance = srv.config.validation.tolerance
    history = [p["dice"] for p in info["dice_history"]]
    assert [p["version"] for p in info["dice_history"]] == [base_package.version + k for k in range(3)]
    assert all(b >= a - tolerance for a, b in itertools.pairwise(history)), history
    assert all(d >= srv.config.validation.threshold for d in history[1:])
    assert [v["merged_updates"] for v in info["versions"][1:]] == [[uid_a], [uid_b]]
    print("validation Dice history:", history)

    # What site A sent: the learned weight arrays and the allowed metadata keys; no pixels, no DICOM.
    (req,) = wire
    parts = _parts(req)
    assert set(parts) == {"weights", "metadata"}
    meta = json.loads(parts["metadata"])
    assert set(meta) == ALLOWED_METADATA_KEYS and meta["base_version"] == v0
    with np.load(io.BytesIO(parts["weights"]), allow_pickle=False) as npz:
        arrays = [npz[name] for name in sorted(npz.files)]
    assert [a.shape for a in arrays] == [w.shape for w in base_package.weights]
    assert all(a.dtype.kind == "f" for a in arrays)
    image_shape = phantom_a.image.shape
    assert not any(a.shape in (image_shape, image_shape[1:]) for a in arrays)
    assert phantom_a.image.tobytes()[:4096] not in parts["weights"]
    stats = site_b.stats("leg")
    # other sites appear under pseudonymous ids (dashboard.show_site_names is off), in stats and in packages
    labels = {srv.state.labels.pseudonym(n) for n in ("hospital-a", "hospital-b")}
    assert {s["site"] for s in stats["stats"]} == labels
    assert pulled_a.metadata["federation"]["site"] in labels
    published = b"".join(srv.state.registry.package_bytes("leg", v) for v in (v0 + 1, v0 + 2))
    assert b"hospital-a" not in published and b"hospital-b" not in published
