"""Review latency: last image out of storescu → PENDING_REVIEW, and approve → approved SEG stored in Orthanc.

A whole node (SCP + workflow + API, the shipped leg model) runs in this process; DCMTK ``storescu``
(``TCP_NODELAY=1``) sends a 40-slice 432² SYNTHETIC T1 leg study; Orthanc is the PACS that receives the
approved SEG. Targets: ≤ settle_seconds + 5 s, and ≤ 3 s. The anchor: Orthanc's own auto-routing waits
``StableAge`` (60 s by default) before it even starts to forward a study.

    .venv/bin/python benchmarks/latency.py [--settle 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=10.0, help="settle_seconds of the node (default 10)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from dicom_node.core.config import NodeConfig
    from dicom_node.core.db import session_scope
    from dicom_node.core.tokens import create_token
    from dicom_node.process.node import build_node
    from models.phantom import PhantomSpec, generate, write_series
    from tests.peers import PEER_ENV, OrthancProcess, free_port, node_settings, require, wait_until

    work = Path(tempfile.mkdtemp(prefix="laurel-latency-"))
    orthanc = OrthancProcess(work / "orthanc").start()
    api_port = free_port()
    settings = node_settings(
        work / "node",
        routing=[{"model": "leg", "match": {"SeriesDescription": "(?i)leg"}}],
        peers=[
            {"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104},
            {
                "name": "pacs",
                "ae_title": orthanc.aet,
                "host": "127.0.0.1",
                "port": orthanc.dicom_port,
                "send_to_us": False,
                "receive_results": True,
            },
        ],
        api={"enabled": True, "host": "127.0.0.1", "port": api_port},
        node={"settle_seconds": args.settle, "completion_scan_seconds": 0.2},
        jobs={"workers": 2, "poll_seconds": 0.05},
    )
    node = build_node(NodeConfig.load(None, **settings))
    with session_scope(node.engine) as s:
        token = create_token(s, "Benchmark Reader", "admin")
    headers = {"Authorization": f"Bearer {token}"}
    url = f"http://127.0.0.1:{api_port}"
    node.start()
    to_review: list[float] = []
    to_pacs: list[float] = []
    try:
        from dicom_node.work.workflow import warm_models

        warm_models(node.services)  # what a node does once at start, so the first study pays no graph build

        def idle() -> bool:
            jobs = requests.get(url + "/api/v1/jobs", headers=headers, timeout=30).json()["jobs"]
            return all(j["state"] in ("DONE", "DEAD") for j in jobs)

        for i in range(args.repeats):
            wait_until(idle, 600, 0.2, "the previous study's jobs (export, learning) to finish")
            ph = generate(PhantomSpec(region="leg", contrast="t1", seed=9000 + i, n_slices=40, matrix=432))
            files = write_series(ph, work / f"study{i}")
            cmd = [
                require("storescu"),
                "-aet",
                "STORESCU",
                "-aec",
                "LAUREL",
                "--max-pdu",
                "131072",
                "127.0.0.1",
                str(node.port),
                *map(str, files),
            ]
            subprocess.run(cmd, env=PEER_ENV, check=True, capture_output=True, timeout=300)
            sent = time.monotonic()  # storescu has returned: the last image has left it

            def pending(i: int = i) -> dict[str, Any] | None:
                studies = requests.get(
                    url + "/api/v1/studies", params={"state": "PENDING_REVIEW"}, headers=headers, timeout=30
                ).json()["studies"]
                return studies[0] if studies else None

            study = wait_until(pending, args.settle + 300, 0.05, "PENDING_REVIEW")
            to_review.append(time.monotonic() - sent)
            before = len(orthanc.post("/tools/find", {"Level": "Instance", "Query": {"Modality": "SEG"}}))
            started = time.monotonic()
            r = requests.post(
                f"{url}/api/v1/studies/{study['id']}/approve",
                json={"StudyInstanceUID": study["StudyInstanceUID"]},
                headers=headers,
                timeout=300,
            )
            r.raise_for_status()
            wait_until(
                lambda b=before: (
                    len(orthanc.post("/tools/find", {"Level": "Instance", "Query": {"Modality": "SEG"}})) > b
                ),
                120,
                0.05,
                "the SEG in Orthanc",
            )
            to_pacs.append(time.monotonic() - started)
            print(
                f"run {i + 1}: last image → PENDING_REVIEW {to_review[-1]:.2f} s; approve → SEG in Orthanc "
                f"{to_pacs[-1]:.2f} s",
                flush=True,
            )
    finally:
        node.stop()
        orthanc.stop()
    med_review, med_pacs = statistics.median(to_review), statistics.median(to_pacs)
    print(f"latency: 40-slice 432² SYNTHETIC T1 leg study, settle_seconds={args.settle:g}, {args.repeats} runs")
    print(
        f"  last image → PENDING_REVIEW   median {med_review:6.2f} s   target ≤ {args.settle + 5:.0f} s  "
        f"({'met' if med_review <= args.settle + 5 else 'NOT met'}); minus settle: {med_review - args.settle:.2f} s"
    )
    print(
        f"  approve → SEG in Orthanc      median {med_pacs:6.2f} s   target ≤ 3 s  "
        f"({'met' if med_pacs <= 3 else 'NOT met'})"
    )
    print("  anchor: Orthanc's own auto-routing waits StableAge = 60 s before forwarding a study")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
