"""Ingest benchmark: 500 MR images (256×256) sent with DCMTK storescu to the node, storescp and Orthanc.

One run measures all of them on this machine, in interleaved rounds, so machine noise hits them alike. The
clock covers the whole ``storescu`` run (association, 500 C-STOREs, release), the same client and the same
kind of files for everyone; every target receives 128 KiB PDUs and TCP_NODELAY=1, and is checked to hold
the 500 images afterwards. Each round:

* node, **right after start**: a fresh ``laurel serve`` (supervisor, intake, API, ``--workers`` workers, the
  leg model routed), sent to as soon as it answers C-ECHO and HTTP, while the workers warm the model up;
* node, **idle**: the same node once the model is warm and nothing runs;
* node, **while a learn job runs**: a SYNTHETIC phantom leg study is sent, drafted, and approved through the
  API (a real approval: the node learns from it); the images are sent while the ``learn`` job is RUNNING
  (the job's end is checked to come after the transfer's);
* DCMTK storescp (files, no fsync, no index) and Orthanc (SQLite index, ``SyncStorageArea`` fsync on).

The node's images go to a fresh study each phase (new UIDs), never routed to a model, fsync'd with their
folders before Success and indexed. Prints images/s (median and best), node/Orthanc for each phase,
node/storescp, and learning/idle.

Usage: ``python benchmarks/ingest.py [--images 500] [--rounds 3] [--workers 2]``  (``make bench``)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.peers import (  # noqa: E402 - the repository root must be on the path first
    PEER_ENV,
    DcmtkStorescp,
    OrthancProcess,
    free_port,
    node_settings,
    store_raw,
    wait_until,
)
from tests.restart.harness import NodeServer  # noqa: E402

PDU = 131072


def write_images(directory: Path, count: int) -> list[Path]:
    """``count`` synthetic 256×256 uint16 MR images of one series."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    study_uid, series_uid = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientName, ds.PatientID = "SYNTHETIC^BENCHMARK", "BENCH0001"
        ds.StudyDate, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20240101", "MR", 1, i + 1
        ds.SeriesDescription = "SYNTHETIC BENCHMARK"
        ds.Rows = ds.Columns = 256
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, (256, 256), dtype=np.uint16).tobytes()
        path = directory / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def storescu_seconds(port: int, called_ae: str, images: Path) -> float:
    """Wall time of one storescu run sending the folder."""
    cmd = ["storescu", "-aet", "STORESCU", "-aec", called_ae, "--max-pdu", str(PDU), "+sd", str(images)]
    started = time.perf_counter()
    proc = subprocess.run([*cmd[:-1], "127.0.0.1", str(port), cmd[-1]], env=PEER_ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"storescu to {called_ae} failed: {proc.stderr[-2000:]}")
    return elapsed


def rate(count: int, seconds: float) -> float:
    """Images per second."""
    return count / seconds


def start_node(workdir: Path, workers: int) -> NodeServer:
    """A fresh ``laurel serve`` with the API, ``workers`` workers and the leg model routed."""
    settings = node_settings(
        workdir,
        peers=[{"name": "bench", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104}],
        routing=[{"model": "leg", "match": {"SeriesDescription": "(?i)leg"}}],
    )
    settings["node"].update({"settle_seconds": 1.0, "max_pdu": 262144, "completion_scan_seconds": 0.5})
    settings["jobs"] = {"workers": workers}
    settings["api"] = {"enabled": True, "host": "127.0.0.1", "port": free_port()}
    return NodeServer(workdir, settings).start(timeout=300)


def node_instances(node: NodeServer, series_uid: str) -> int:
    """How many instances of the series the node indexed."""
    from sqlalchemy import func, select

    from dicom_node.core.db import Instance, Series, session_scope

    engine = node.engine()
    with session_scope(engine) as session:
        n = session.scalar(
            select(func.count())
            .select_from(Instance)
            .join(Series, Series.id == Instance.series_id)
            .where(Series.SeriesInstanceUID == series_uid)
        )
    engine.dispose()
    return int(n or 0)


def learn_job(node: NodeServer) -> tuple[str, float | None] | None:
    """The state of the node's ``learn`` job and when it finished (epoch seconds), if there is one."""
    from sqlalchemy import select

    from dicom_node.core.db import Job, session_scope

    engine = node.engine()
    with session_scope(engine) as session:
        job = session.scalars(select(Job).where(Job.kind == "learn").order_by(Job.id.desc())).first()
        found = None if job is None else (str(job.state), job.finished_at)
    engine.dispose()
    if found is None:
        return None
    state, finished = found
    return state, None if finished is None else finished.replace(tzinfo=UTC).timestamp()


def approve_a_phantom_study(node: NodeServer, folder: Path, seed: int) -> None:
    """Send a SYNTHETIC leg phantom, wait for its draft and approve it (the node queues a learn job)."""
    from tests.workflow_fixtures import phantom_series

    files, _phantom = phantom_series(folder, seed, n_slices=8)
    assert store_raw(node.port, files) == [0] * len(files)
    import pydicom

    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    def pending() -> int | None:
        rows = node.api("GET", "/api/v1/studies", params={"state": "PENDING_REVIEW"}).json()["studies"]
        return next((r["id"] for r in rows if r["StudyInstanceUID"] == study_uid), None)

    study_id = wait_until(pending, 600, 0.5, "the phantom's draft")
    answer = node.api("POST", f"/api/v1/studies/{study_id}/approve", json={"StudyInstanceUID": study_uid})
    assert answer.status_code == 200, answer.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for exe in ("storescu", "storescp", "Orthanc"):
        if shutil.which(exe) is None:
            sys.exit(f"{exe} is not installed (scripts/setup.sh installs it)")
    root = Path(tempfile.mkdtemp(prefix="laurel-bench-"))
    phases = ("after start", "idle", "while learning")
    try:
        sets = {phase: root / f"images-{n}" for n, phase in enumerate(phases)}
        series_uids = {}
        for phase, folder in sets.items():
            paths = write_images(folder, args.images)
            import pydicom

            series_uids[phase] = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
        size = next(sets["idle"].iterdir()).stat().st_size
        results: dict[str, list[float]] = {**{f"node {p}": [] for p in phases}, "storescp": [], "orthanc": []}
        overlapped = 0
        for r in range(args.rounds):
            # fresh series UIDs per round would need new files; a fresh node storage per round suffices
            node = start_node(root / f"node{r}", args.workers)
            try:
                seconds = storescu_seconds(node.port, "LAUREL", sets["after start"])
                results["node after start"].append(rate(args.images, seconds))
                wait_until(lambda n=node: "warmed up in" in n.log(), 900, 0.5, "the model warm-up")
                results["node idle"].append(rate(args.images, storescu_seconds(node.port, "LAUREL", sets["idle"])))
                approve_a_phantom_study(node, root / f"phantom{r}", 700 + r)
                wait_until(lambda n=node: (j := learn_job(n)) is not None and j[0] == "RUNNING", 600, 0.1, "learning")
                seconds = storescu_seconds(node.port, "LAUREL", sets["while learning"])
                transfer_end = time.time()
                results["node while learning"].append(rate(args.images, seconds))
                state = learn_job(node)
                assert state is not None
                if state[0] == "RUNNING" or (state[1] is not None and state[1] >= transfer_end):
                    overlapped += 1
                for phase in phases:
                    indexed = node_instances(node, series_uids[phase])
                    assert indexed == args.images, f"the node indexed {indexed} of {args.images} ({phase})"
            finally:
                node.stop(timeout=60)
            scp = DcmtkStorescp(root / f"storescp{r}", aet="STORESCP")
            scp.start(extra=())
            try:
                results["storescp"].append(rate(args.images, storescu_seconds(scp.port, "STORESCP", sets["idle"])))
                assert len(scp.files()) == args.images, f"storescp wrote {len(scp.files())} of {args.images}"
            finally:
                scp.stop()
            orthanc = OrthancProcess(root / f"orthanc{r}", extra_config={"MaximumPduLength": PDU})
            orthanc.start()
            try:
                results["orthanc"].append(
                    rate(args.images, storescu_seconds(orthanc.dicom_port, "ORTHANC", sets["idle"]))
                )
                stored = orthanc.get("/statistics")["CountInstances"]
                assert stored == args.images, f"Orthanc stored {stored} of {args.images}"
            finally:
                orthanc.stop()
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in results.items()), flush=True)
        version = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        print(
            f"ingest: {args.images} MR images 256x256 uint16 ({size // 1024} KiB files), storescu with TCP_NODELAY=1, "
            f"{PDU // 1024} KiB PDUs, {args.rounds} interleaved rounds, {os.cpu_count()} CPUs, "
            f"node = laurel serve with {args.workers} workers"
        )
        labels = {
            **{f"node {p}": f"Laurel node, {p}" for p in phases},
            "storescp": "DCMTK storescp (files, no fsync, no index)",
            "orthanc": f"{version} (index + SyncStorageArea)",
        }
        medians = {k: statistics.median(v) for k, v in results.items()}
        for key, values in results.items():
            print(f"  {labels[key]:<48} median {medians[key]:7.1f} img/s   best {max(values):7.1f} img/s")
        for phase in phases:
            print(f"  ratio node/Orthanc, {phase + ':':<16} {medians[f'node {phase}'] / medians['orthanc']:.2f}")
        print(f"  ratio node/storescp, idle:         {medians['node idle'] / medians['storescp']:.2f}")
        print(f"  while learning / idle (node):      {medians['node while learning'] / medians['node idle']:.2f}")
        print(f"  transfers that overlapped a learn job from start to end: {overlapped} of {args.rounds}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
