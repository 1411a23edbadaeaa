"""Fixtures of the federation tests: a real uvicorn server on a free loopback port, sites, small data."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federation.client import FederationClient
from federation.server.app import BackgroundServer
from federation.server.config import FederationConfig

SLICES = 4  # reference slices per validation case: a validation takes well under a second


@pytest.fixture(scope="session")
def base_package() -> Any:
    """The shipped leg model (the federation's version history starts from it)."""
    from models.zoo import load_default

    return load_default("leg")


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny private reference set for ``leg``: one SYNTHETIC phantom subject, a few slices."""
    from models.phantom import cohort, generate

    root = tmp_path_factory.mktemp("reference")
    (root / "leg").mkdir()
    spec = dataclasses.replace(cohort("reference_pd_leg", 1)[0], n_slices=SLICES)
    ph = generate(spec)
    np.savez(root / "leg" / "ref0.npz", image=ph.image, labels=ph.labels, spacing=np.asarray(ph.spacing))
    return root


@pytest.fixture(scope="session")
def base_dice(base_package: Any, reference_dir: Path) -> float:
    """The base model's Dice on the reference set (thresholds in tests are set relative to it)."""
    from federation.server.validation import ValidationSet

    return ValidationSet(reference_dir / "leg", "leg").evaluate(base_package).dice


class LiveServer(BackgroundServer):
    """The federation app served by uvicorn in a thread on a free loopback port, with test helpers."""

    def __init__(self, config: FederationConfig, *, start_worker: bool = True) -> None:
        super().__init__(config, start_worker=start_worker, host="127.0.0.1", port=0)

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)
        assert not self.thread.is_alive(), "uvicorn did not stop"

    def add_site(self, name: str, models: list[str] | None = None) -> str:
        return self.state.keys.add_site(name, models)[1]

    def client(self, key: str, **kw: Any) -> FederationClient:
        kw.setdefault("timeout", 30)
        kw.setdefault("retries", 2)
        kw.setdefault("backoff", 0.05)
        return FederationClient(self.url, key, self.state.server_key.public_key, **kw)


ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def fed_config(tmp_path: Path, reference_dir: Path, base_dice: float) -> Callable[..., FederationConfig]:
    """Config factory: own data dir, the tiny reference set, thresholds just below the base model's Dice."""

    def make(data_dir: Path | None = None, **sections: Any) -> FederationConfig:
        validation = {
            "validation_dir": str(reference_dir),
            "threshold": round(max(0.0, base_dice - 0.15), 3),
            "tolerance": 0.05,
            **sections.pop("validation", {}),
        }
        return FederationConfig.load(
            None,
            server={"data_dir": str(data_dir or tmp_path / "fed"), "port": 0, **sections.pop("server", {})},
            validation=validation,
            models=sections.pop("models", []),
            **sections,
        )

    return make


@pytest.fixture
def start_server(base_package: Any) -> Iterator[ServerFactory]:
    """Start servers (stopped at the end); a fresh registry gets the base leg package as version history."""
    started: list[LiveServer] = []

    def start(config: FederationConfig, *, start_worker: bool = True, seed: bool = True) -> LiveServer:
        srv = LiveServer(config, start_worker=start_worker)
        if seed and "leg" not in srv.state.registry.model_names():
            srv.state.processor.publish_initial("leg", base_package)
        started.append(srv)
        return srv.start()

    os.environ.setdefault("TCP_NODELAY", "1")
    yield start
    for srv in reversed(started):
        srv.stop()


def wait_terminal(client: FederationClient, update_id: str, timeout: float = 180.0) -> dict[str, Any]:
    """Poll an update until it is ACCEPTED, REJECTED or FAILED."""
    return client.wait_for_update(update_id, timeout=timeout, poll=0.1)


def perturbed(weights: list[np.ndarray], scale: float, seed: int = 0) -> list[np.ndarray]:
    """The weights with small relative noise (a stand-in for a site's tiny learning step)."""
    rng = np.random.default_rng(seed)
    return [(w * (1.0 + scale * rng.standard_normal(w.shape))).astype(w.dtype) for w in weights]
