"""Ingest benchmark: the same 500 MR images (256×256) sent with DCMTK storescu to the node, storescp and Orthanc.

One run measures all three on this machine, in interleaved rounds (each round: a fresh store for every
target, then node, storescp, Orthanc in turn), so machine noise hits them alike. The clock covers the
whole ``storescu`` run (association, 500 C-STOREs, release), the same client and files for everyone.
Every target receives 128 KiB PDUs and TCP_NODELAY=1. Afterwards it checks that each target really holds
the 500 images, then prints images/s (best and median of the rounds) and the ratios of medians.

* node: the Laurel DICOM spine (``dicom_node.process.node.Node``: SCP with its C-STORE fast path, files and their
  folders fsync'd before Success, SQLite WAL index, completion scan, job workers) in its own process, as
  ``laurel serve`` runs it (without the segmentation workflow, which does not touch ingest);
* DCMTK storescp: writes files, no fsync, no index;
* Orthanc: its SQLite index and storage area (``SyncStorageArea`` fsync on, the default).

Usage: ``python benchmarks/ingest.py [--images 500] [--rounds 5]``  (``make bench``)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.peers import (  # noqa: E402 - the repository root must be on the path first
    PEER_ENV,
    DcmtkStorescp,
    OrthancProcess,
    free_port,
    node_settings,
    port_open,
    wait_until,
)

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


class NodeRun:
    """The node's spine in a child process with a fresh storage folder."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        settings = node_settings(
            workdir,
            port=self.port,
            peers=[
                {"name": "bench", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104},
            ],
        )
        settings["node"].update({"settle_seconds": 600, "max_pdu": 262144, "completion_scan_seconds": 1.0})
        settings["jobs"] = {"workers": 1}
        self.config = workdir / "node.yaml"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump(settings))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**PEER_ENV, "PYTHONPATH": str(REPO)}
        log = (self.workdir / "node.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-node", str(self.config)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_until(lambda: port_open(self.port), 60, 0.05, f"the node on {self.port}")

    def count(self) -> int:
        from sqlalchemy import func, select

        from dicom_node.core.config import NodeConfig
        from dicom_node.core.db import Instance, session_scope
        from dicom_node.core.engine import make_engine

        engine = make_engine(NodeConfig.load(self.config).node.db_url)
        with session_scope(engine) as session:
            n = int(session.scalar(select(func.count()).select_from(Instance)) or 0)
        engine.dispose()
        return n

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)


def serve_node(config: Path) -> None:
    """Child mode: run the node's spine until SIGTERM."""
    import threading

    from dicom_node.core.config import NodeConfig
    from dicom_node.process.node import Node

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = Node(NodeConfig.load(config))
    node.start()
    stop.wait()
    node.stop()


def rate(count: int, seconds: float) -> float:
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve-node", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_node:
        serve_node(args.serve_node)
        return
    for exe in ("storescu", "storescp", "Orthanc"):
        if shutil.which(exe) is None:
            sys.exit(f"{exe} is not installed (scripts/setup.sh installs it)")
    root = Path(tempfile.mkdtemp(prefix="laurel-bench-"))
    try:
        images = root / "images"
        paths = write_images(images, args.images)
        size = paths[0].stat().st_size
        results: dict[str, list[float]] = {"node": [], "storescp": [], "orthanc": []}
        for r in range(args.rounds):
            node = NodeRun(root / f"node{r}")
            node.start()
            try:
                results["node"].append(rate(args.images, storescu_seconds(node.port, "LAUREL", images)))
                assert node.count() == args.images, f"the node indexed {node.count()} of {args.images}"
            finally:
                node.stop()
            scp = DcmtkStorescp(root / f"storescp{r}", aet="STORESCP")
            scp.start(extra=())
            try:
                results["storescp"].append(rate(args.images, storescu_seconds(scp.port, "STORESCP", images)))
                assert len(scp.files()) == args.images, f"storescp wrote {len(scp.files())} of {args.images}"
            finally:
                scp.stop()
            orthanc = OrthancProcess(root / f"orthanc{r}", extra_config={"MaximumPduLength": PDU})
            orthanc.start()
            try:
                results["orthanc"].append(rate(args.images, storescu_seconds(orthanc.dicom_port, "ORTHANC", images)))
                stored = orthanc.get("/statistics")["CountInstances"]
                assert stored == args.images, f"Orthanc stored {stored} of {args.images}"
            finally:
                orthanc.stop()
            print(
                f"round {r + 1}: node {results['node'][-1]:.0f} img/s, storescp {results['storescp'][-1]:.0f} img/s, "
                f"Orthanc {results['orthanc'][-1]:.0f} img/s",
                flush=True,
            )
        version = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        print(
            f"ingest: {args.images} MR images 256x256 uint16 ({size // 1024} KiB files), storescu with TCP_NODELAY=1, "
            f"{PDU // 1024} KiB PDUs, {args.rounds} interleaved rounds, {os.cpu_count()} CPUs"
        )
        labels = {
            "node": "Laurel node (fsync'd files + index)",
            "storescp": "DCMTK storescp (files, no fsync, no index)",
            "orthanc": f"{version} (index + SyncStorageArea)",
        }
        medians = {k: statistics.median(v) for k, v in results.items()}
        for key, values in results.items():
            print(f"  {labels[key]:<48} median {medians[key]:7.1f} img/s   best {max(values):7.1f} img/s")
        print(f"  ratio node/Orthanc:  {medians['node'] / medians['orthanc']:.2f}")
        print(f"  ratio node/storescp: {medians['node'] / medians['storescp']:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
