"""Throughput benchmark: SYNTHETIC phantom studies through segmentation with 1 and with 2 worker processes.

A real ``laurel serve`` on a real PostgreSQL index (``initdb`` + ``pg_ctl`` in a temporary folder, as the
tests run it). For each worker count: a fresh database and storage, the node started and its model warmed,
then ``--studies`` SYNTHETIC leg phantoms sent one after another with C-STORE; the clock runs from the first
image sent to the last study in PENDING_REVIEW. Prints studies/hour for each count, their ratio, where the
models ran (CPU or GPU), and how long ``laurel serve`` took to stop on SIGTERM when idle.

Usage: ``python benchmarks/throughput.py [--studies 20] [--slices 16]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.peers import (  # noqa: E402 - the repository root must be on the path first
    NodeProcess,
    PostgresServer,
    node_settings,
    postgres_bin_dir,
    store_raw,
    wait_until,
)
from tests.workflow_fixtures import phantom_series  # noqa: E402


def pending_review(engine: Any) -> int:
    """How many studies wait for review."""
    from sqlalchemy import func, select

    from dicom_node.core.db import Study, session_scope

    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Study).where(Study.state == "PENDING_REVIEW")) or 0)


def run(root: Path, server: PostgresServer, workers: int, studies: list[list[Path]]) -> tuple[float, float]:
    """Studies/hour with ``workers`` worker processes, and the idle stop time in seconds."""
    settings = node_settings(
        root / f"workers{workers}",
        routing=[{"model": "leg", "match": {"SeriesDescription": "(?i)leg"}}],
        jobs={"workers": workers},
    )
    settings["node"].update({"settle_seconds": 1.0, "completion_scan_seconds": 0.5, "max_associations": 8})
    settings["node"]["database_url"] = server.create_database(f"throughput{workers}")
    node = NodeProcess(root / f"workers{workers}", settings).start(timeout=300)
    try:
        wait_until(lambda: node.log().count("warmed up in") >= workers, 900, 0.5, "every worker's warm-up")
        engine = node.engine()
        started = time.perf_counter()
        for files in studies:
            assert store_raw(node.port, files) == [0] * len(files)
        wait_until(lambda: pending_review(engine) == len(studies), 3600, 0.5, "every draft")
        elapsed = time.perf_counter() - started
        engine.dispose()
        assert node.proc is not None
        stop_started = time.perf_counter()
        node.proc.send_signal(signal.SIGTERM)
        node.proc.wait(120)
        stop_seconds = time.perf_counter() - stop_started
        device = next((line for line in node.log().splitlines() if "models run on" in line), "models run on ?")
        print(f"  {workers} worker(s): {device.split('models run on ', 1)[1]}", flush=True)
        return len(studies) / elapsed * 3600, stop_seconds
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--slices", type=int, default=16)
    args = parser.parse_args()
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (scripts/setup.sh installs it)")
    root = Path(tempfile.mkdtemp(prefix="laurel-throughput-"))
    os.chmod(root, 0o755)  # noqa: S103 - the PostgreSQL server runs as the postgres user when this runs as root
    server = PostgresServer(bin_dir, root / "pg")
    server.workdir.mkdir()
    try:
        server.start()
        studies = [
            phantom_series(root / "studies" / str(seed), seed, n_slices=args.slices)[0]
            for seed in range(100, 100 + args.studies)
        ]
        rates: dict[int, float] = {}
        stops: dict[int, float] = {}
        for workers in (1, 2):
            rates[workers], stops[workers] = run(root, server, workers, studies)
            print(f"  {workers} worker(s): {rates[workers]:.0f} studies/hour", flush=True)
        print(
            f"throughput: {args.studies} SYNTHETIC leg studies ({args.slices} slices 256x256), laurel serve on "
            f"PostgreSQL, {os.cpu_count()} CPUs"
        )
        for workers in (1, 2):
            print(
                f"  {workers} worker(s): {rates[workers]:7.0f} studies/hour   "
                f"idle stop on SIGTERM {stops[workers]:.1f} s"
            )
        print(f"  ratio 2 workers / 1 worker: {rates[2] / rates[1]:.2f}")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
