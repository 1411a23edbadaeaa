"""Federation server throughput: upload → published latency and uploads per minute, default validation set.

A real server (uvicorn on a free loopback port, fresh data folder) bootstraps the shipped leg model and
writes its default private reference set (SYNTHETIC phantoms: ``validation.default_subjects`` subjects ×
``default_slices`` slices). Sites then upload the model's weights with small perturbations (standing in for
a site's learning step), first one at a time (latency), then ``--concurrent`` at once (throughput).

Printed, all measured in this run:
- time to 202 (the synchronous checks: key, metadata, npz parse, shapes/dtypes/finiteness, durable write);
- upload → published (ACCEPTED) latency, median and max;
- uploads per minute with a full queue;
- the floor: two validations (candidate and merge) of the same package on the same reference set, timed
  directly in this process; the ratio latency / floor shows what the server adds around the validations
  (package load, merge, signing, storage, queueing). The server's own validation timings (its
  ``laurel_fed_validation_seconds`` histogram) split the latency into validation and the rest, which is
  robust against other load on the machine.

Run: ``.venv/bin/python benchmarks/federation.py [--sequential 4] [--concurrent 8]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _noisy(weights: list[np.ndarray], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(w * (1.0 + 0.001 * rng.standard_normal(w.shape))).astype(w.dtype) for w in weights]


def main() -> None:
    parser = argparse.ArgumentParser(description="federation server: upload → published latency, uploads/min")
    parser.add_argument("--sequential", type=int, default=4, help="uploads one at a time (latency)")
    parser.add_argument("--concurrent", type=int, default=8, help="uploads at once (throughput)")
    parser.add_argument("--model", default="leg")
    args = parser.parse_args()

    from federation.client import FederationClient
    from federation.server.app import BackgroundServer
    from federation.server.config import FederationConfig
    from models.zoo import load_default

    load_default(args.model)  # fail early when the zoo lacks the model
    with tempfile.TemporaryDirectory(prefix="laurel-fed-bench-") as tmp:
        cfg = FederationConfig.load(None, server={"data_dir": tmp, "port": 0}, models=[args.model])
        t0 = time.perf_counter()
        server = BackgroundServer(cfg, host="127.0.0.1", port=0).start(timeout=600)
        startup = time.perf_counter() - t0
        try:
            state = server.state
            key = state.keys.add_site("bench")[1]
            client = FederationClient(server.url, key, state.server_key.public_key, timeout=60)
            vset = state.processor.validator.set_for(args.model)
            cases = vset.cases()
            v0 = client.latest_version(args.model)
            assert v0 is not None
            slices = sum(c.image.shape[0] for c in cases)
            matrices = ", ".join(str(c.image.shape[1]) for c in cases)
            print(
                f"reference set: {len(cases)} phantom subjects, {slices} slices (matrix {matrices}); "
                f"threshold {cfg.validation.threshold}, strategy {cfg.merge.strategy}; "
                f"start-up incl. bootstrap {startup:.1f} s"
            )

            # The floor: two validations of one package, in this process.
            pkg = state.processor.package(args.model, v0)
            vset.evaluate(pkg)  # warm-up (graph tracing)
            floors = []
            for _ in range(2):
                t = time.perf_counter()
                vset.evaluate(pkg)
                vset.evaluate(pkg)
                floors.append(time.perf_counter() - t)
            floor = min(floors)

            to_202, latency = [], []
            for i in range(args.sequential):
                version = client.latest_version(args.model)
                assert version is not None
                weights = _noisy(state.processor.package(args.model, version).weights, seed=i)
                t = time.perf_counter()
                uid = client.upload_update(args.model, version, weights, n_slices=8)
                to_202.append(time.perf_counter() - t)
                done = client.wait_for_update(uid, timeout=900, poll=0.05)
                latency.append(time.perf_counter() - t)
                if done["state"] != "ACCEPTED":
                    print(f"  update {i}: {done['state']} ({done['reason']})")

            def mean_validation(stage: str) -> float:
                reg = state.metrics.registry
                labels = {"model": args.model, "stage": stage}
                total = reg.get_sample_value("laurel_fed_validation_seconds_sum", labels) or 0.0
                count = reg.get_sample_value("laurel_fed_validation_seconds_count", labels) or 1.0
                return total / count

            in_server = mean_validation("candidate") + mean_validation("merged")

            version = client.latest_version(args.model)
            assert version is not None
            weights = state.processor.package(args.model, version).weights
            payloads = [_noisy(weights, seed=100 + i) for i in range(args.concurrent)]
            t = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
                ids = list(pool.map(lambda w: client.upload_update(args.model, version, w, n_slices=8), payloads))
            states = [client.wait_for_update(u, timeout=3600, poll=0.1)["state"] for u in ids]
            burst = time.perf_counter() - t
        finally:
            server.stop()

    med = statistics.median(latency)
    print(
        f"time to 202 (synchronous checks): median {1000 * statistics.median(to_202):.0f} ms, "
        f"max {1000 * max(to_202):.0f} ms"
    )
    print(f"upload → published, one at a time (n={len(latency)}): median {med:.2f} s, max {max(latency):.2f} s")
    print(
        f"validations inside the server (candidate + merge, mean): {in_server:.2f} s = "
        f"{100 * in_server / med:.0f}% of the latency; everything else (load, merge, sign, store, queue) "
        f"{med - in_server:.2f} s"
    )
    print(f"floor: 2 validations timed directly in this process {floor:.2f} s → latency / floor = {med / floor:.2f}")
    print(
        f"{args.concurrent} concurrent uploads: all terminal in {burst:.1f} s "
        f"({', '.join(f'{s}={states.count(s)}' for s in sorted(set(states)))}) → "
        f"{60 * args.concurrent / burst:.1f} uploads/min (floor-bound maximum {60 / floor:.1f}/min)"
    )


if __name__ == "__main__":
    main()
