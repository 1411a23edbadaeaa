"""Real peers and test data for the node's tests: Orthanc, DCMTK, dciodvfy, the node as a process.

Everything runs on free loopback ports, with ``TCP_NODELAY=1`` in the environment, and is stopped by PID.
Import as ``from tests.peers import OrthancProcess, wait_until, write_study, ...``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import requests
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")

#: Environment for every peer process: no Nagle delay on DCMTK/Orthanc sockets.
PEER_ENV = {**os.environ, "TCP_NODELAY": "1"}

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


# ---------------------------------------------------------------------------------------------- helpers
_ISSUED: set[int] = set()  # ports this process handed out already


def free_port() -> int:
    """A TCP port free on the loopback interface right now, and never one this process handed out before:
    the kernel may give a just-released port again, and a peer asked for two ports (Orthanc's DICOM and
    HTTP) then got the same one twice and failed to start (seen in CI)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _ISSUED:
            _ISSUED.add(port)
            return port


def wait_until(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, message: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); ``AssertionError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
        except Exception as exc:  # the peer may not be up yet
            last_error = exc
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {message}{detail}")
        time.sleep(interval)


def require(binary: str) -> str:
    """The path of an installed program, or skip the test saying what is missing."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (scripts/setup.sh installs it)")
    return path


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# ---------------------------------------------------------------------------------------------- datasets
def make_image(
    study_uid: str,
    series_uid: str,
    *,
    instance_number: int = 1,
    sop_class: str = MRImageStorage,
    rows: int = 32,
    columns: int = 32,
    frames: int = 1,
    modality: str = "MR",
    series_number: int = 1,
    series_description: str = "SYNTHETIC TEST",
    body_part: str | None = None,
    patient_name: str = "SYNTHETIC^TEST",
    patient_id: str = "SYN0001",
    seed: int = 0,
    pixel_data: bool = True,
) -> Dataset:
    """A small synthetic image instance (uint16, explicit VR little endian) with file meta."""
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyDescription = "SYNTHETIC STUDY"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    if body_part:
        ds.BodyPartExamined = body_part
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [0.0, 0.0, float(instance_number) * 5.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 5.0
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixel_data:
        rng = np.random.default_rng(seed + instance_number)
        shape = (frames, rows, columns) if frames > 1 else (rows, columns)
        ds.PixelData = rng.integers(0, 4000, shape, dtype=np.uint16).tobytes()
    return ds


def make_segmentation(study_uid: str, series_uid: str, rows: int = 16, columns: int = 16, frames: int = 2) -> Dataset:
    """A minimal BINARY Segmentation Storage instance (enough for a C-STORE; not a valid IOD)."""
    ds = make_image(study_uid, series_uid, sop_class=SEGMENTATION, rows=rows, columns=columns, modality="SEG")
    ds.BitsAllocated = 1
    ds.BitsStored = 1
    ds.HighBit = 0
    ds.NumberOfFrames = frames
    ds.SegmentationType = "BINARY"
    bits = np.zeros(frames * rows * columns, dtype=np.uint8)
    bits[::3] = 1
    ds.PixelData = np.packbits(bits, bitorder="little").tobytes()
    return ds


@dataclass
class StudyFiles:
    """A synthetic study written to disk."""

    study_uid: str
    series_uids: list[str]
    paths: list[Path] = field(default_factory=list)
    by_series: dict[str, list[Path]] = field(default_factory=dict)
    sop_instance_uids: list[str] = field(default_factory=list)


def write_study(
    directory: Path,
    *,
    series: int = 3,
    instances: int = 3,
    descriptions: Sequence[str] | None = None,
    rows: int = 32,
    columns: int = 32,
    **image_kwargs: Any,
) -> StudyFiles:
    """Write a study of ``series`` × ``instances`` MR images into ``directory``; returns what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    result = StudyFiles(study_uid, [])
    for s in range(series):
        series_uid = generate_uid()
        result.series_uids.append(series_uid)
        description = descriptions[s] if descriptions else f"SYNTHETIC SERIES {s + 1}"
        for i in range(instances):
            ds = make_image(
                study_uid,
                series_uid,
                instance_number=i + 1,
                series_number=s + 1,
                series_description=description,
                rows=rows,
                columns=columns,
                seed=100 * s,
                **image_kwargs,
            )
            path = directory / f"s{s + 1:02d}_i{i + 1:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            result.paths.append(path)
            result.by_series.setdefault(series_uid, []).append(path)
            result.sop_instance_uids.append(str(ds.SOPInstanceUID))
    return result


# ---------------------------------------------------------------------------------------------- DICOM SCU helpers
@dataclass(frozen=True)
class EchoOutcome:
    """What a C-ECHO attempt got: the status, or the A-ASSOCIATE-RJ (result, source, reason)."""

    echo_status: int | None
    rejection: tuple[int, int, int] | None

    @property
    def is_rejected(self) -> bool:
        """The association was rejected."""
        return self.rejection is not None


def c_echo(
    port: int,
    called_ae: str = "LAUREL",
    calling_ae: str = "STORESCU",
    *,
    host: str = "127.0.0.1",
    bind_address: tuple[str, int] | None = None,
) -> EchoOutcome:
    """C-ECHO with pynetdicom (optionally from another local address); returns status or rejection."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(host, port, ae_title=called_ae, bind_address=bind_address)
    if assoc.is_established:
        status = assoc.send_c_echo()
        assoc.release()
        return EchoOutcome(int(status.Status) if "Status" in status else None, None)
    rj = assoc.acceptor.primitive if assoc.is_rejected else None
    rejection = None if rj is None else (int(rj.result or 0), int(rj.result_source or 0), int(rj.diagnostic or 0))
    return EchoOutcome(None, rejection)


def echo_ok(port: int, called_ae: str = "LAUREL", calling_ae: str = "STORESCU") -> bool:
    """Whether the node answers a C-ECHO with Success."""
    return c_echo(port, called_ae, calling_ae).echo_status == 0


def store_raw(
    port: int,
    paths: Sequence[Path],
    *,
    called_ae: str = "LAUREL",
    calling_ae: str = "STORESCU",
    on_status: Callable[[Path, int | None], None] | None = None,
) -> list[int | None]:
    """C-STORE files *byte for byte* (file meta says what they are; the dataset is not parsed).

    Lets a test send malformed data. Uses pynetdicom's chunked sending, switched on only inside this call.
    """
    from pydicom.filereader import read_file_meta_info
    from pynetdicom import AE, _config

    metas = [read_file_meta_info(p) for p in paths]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for pair in sorted({(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas}):
        ae.add_requested_context(pair[0], [pair[1]])
    statuses: list[int | None] = []
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
        if not assoc.is_established:
            return [None] * len(paths)
        try:
            for path in paths:
                if not assoc.is_established:  # the peer went away: the rest is not sent
                    statuses.append(None)
                    continue
                status = assoc.send_c_store(path)
                code = int(status.Status) if "Status" in status else None
                statuses.append(code)
                if on_status is not None:
                    on_status(path, code)
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return statuses


def store_datasets(
    port: int, datasets: Iterable[Dataset], *, called_ae: str = "LAUREL", calling_ae: str = "STORESCU"
) -> list[Any]:
    """C-STORE pydicom datasets over one association; returns each response status Dataset."""
    from pynetdicom import AE

    items = list(datasets)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for pair in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in items}):
        ae.add_requested_context(pair[0], [pair[1]])
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    assert assoc.is_established, "association with the node was not established"
    try:
        return [assoc.send_c_store(d) for d in items]
    finally:
        assoc.release()


def storescu(
    port: int,
    files: Sequence[Path | str],
    *,
    called_ae: str = "LAUREL",
    calling_ae: str = "STORESCU",
    extra: Sequence[str] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run DCMTK storescu (TCP_NODELAY=1) against ``127.0.0.1:port``."""
    exe = require("storescu")
    cmd = [exe, "-aet", calling_ae, "-aec", called_ae, *extra, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, env=PEER_ENV, capture_output=True, text=True, timeout=timeout, check=False)


def echoscu(
    port: int, *, called_ae: str = "LAUREL", calling_ae: str = "ECHOSCU", timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run DCMTK echoscu (TCP_NODELAY=1) against ``127.0.0.1:port``."""
    exe = require("echoscu")
    cmd = [exe, "-aet", calling_ae, "-aec", called_ae, "127.0.0.1", str(port)]
    return subprocess.run(cmd, env=PEER_ENV, capture_output=True, text=True, timeout=timeout, check=False)


def dciodvfy(path: Path) -> list[str]:
    """The error lines dciodvfy (dicom3tools) reports for one file."""
    exe = require("dciodvfy")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120, check=False)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


# ---------------------------------------------------------------------------------------------- processes
class ManagedProcess:
    """A child process started by a test and stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = self.workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The child's PID."""
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """Whether the child still runs."""
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self, cmd: Sequence[str], env: dict[str, str] | None = None) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env or PEER_ENV, cwd=self.workdir
        )
        log.close()

    def log(self) -> str:
        """The child's output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, wait, then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(15)
        self.proc = None


class OrthancProcess(ManagedProcess):
    """Orthanc as a test PACS, with a generated config: loopback peers, ports and storage from the test."""

    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "ORTHANC",
        dicom_port: int | None = None,
        http_port: int | None = None,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(workdir, "orthanc")
        self.extra_config = dict(extra_config or {})
        self.aet = aet
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.modalities = dict(modalities or {})
        self.config_path = self.workdir / "orthanc.json"

    @property
    def url(self) -> str:
        """The REST API's base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    def write_config(self) -> Path:
        """The generated Orthanc configuration."""
        storage = self.workdir / "storage"
        config = {
            "Name": f"laurel-test-{self.aet}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "UnknownSopClassAccepted": True,
            "DicomModalities": {name: list(spec) for name, spec in self.modalities.items()},
            "DicomAssociationCloseDelay": 0,
            "DicomScuTimeout": 10,
            "ConcurrentJobs": 2,
            "Plugins": [],
            "LuaScripts": [],
            "StorageCompression": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
        }
        config.update(self.extra_config)
        self.config_path.write_text(json.dumps(config, indent=2))
        return self.config_path

    def start(self, timeout: float = 60) -> OrthancProcess:
        """Start Orthanc and wait until REST and DICOM answer."""
        exe = require("Orthanc")
        self.write_config()
        self._spawn([exe, str(self.config_path)])
        wait_until(
            lambda: self.alive and self.get("/system").get("DicomAet") == self.aet and port_open(self.dicom_port),
            timeout,
            0.1,
            f"Orthanc on {self.url} (log: {self.log_path})",
        )
        return self

    def get(self, path: str) -> Any:
        """GET a REST resource (JSON)."""
        response = requests.get(self.url + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any = None, *, data: bytes | None = None, timeout: float = 120) -> Any:
        """POST JSON (or raw bytes) to a REST resource."""
        if data is not None:
            response = requests.post(self.url + path, data=data, timeout=timeout)
        else:
            response = requests.post(self.url + path, json=body, timeout=timeout)
        response.raise_for_status()
        return response.json() if response.content else None

    def upload(self, paths: Iterable[Path]) -> list[str]:
        """Store files through REST; returns the Orthanc instance ids."""
        return [self.post("/instances", data=Path(p).read_bytes())["ID"] for p in paths]

    def instances(self) -> list[str]:
        """Orthanc ids of every stored instance."""
        return list(self.get("/instances"))

    def sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of every stored instance."""
        return {self.get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"] for i in self.instances()}

    def study_id(self, study_uid: str) -> str:
        """Orthanc's id of a study by its Study Instance UID."""
        found = self.post("/tools/lookup", data=study_uid.encode())
        return next(item["ID"] for item in found if item["Type"] == "Study")

    def store_to(self, modality: str, resources: Sequence[str], *, synchronous: bool = True) -> Any:
        """Send resources to a configured modality (how a PACS auto-routes): ``/modalities/{m}/store``."""
        return self.post(f"/modalities/{modality}/store", {"Resources": list(resources), "Synchronous": synchronous})


class DcmtkStorescp(ManagedProcess):
    """DCMTK storescp writing every received object to its own new file (``+uf``), so copies are counted."""

    def __init__(self, workdir: Path, *, aet: str = "STORESCP", port: int | None = None) -> None:
        super().__init__(workdir, "storescp")
        self.aet = aet
        self.port = port or free_port()
        self.out = self.workdir / "received"

    def start(self, extra: Sequence[str] = ("+uf",), timeout: float = 30) -> DcmtkStorescp:
        """Start storescp and wait until it accepts connections."""
        exe = require("storescp")
        self.out.mkdir(parents=True, exist_ok=True)
        self._spawn([exe, "-aet", self.aet, "-od", str(self.out), "--max-pdu", "131072", *extra, str(self.port)])
        wait_until(lambda: self.alive and port_open(self.port), timeout, 0.05, f"storescp on {self.port}")
        return self

    def files(self) -> list[Path]:
        """The files received so far."""
        return sorted(p for p in self.out.iterdir() if p.is_file()) if self.out.exists() else []


def postgres_bin_dir() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them off PATH), newest version first."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    return versions[0] if versions else None


class PostgresServer:
    """A throw-away PostgreSQL server: ``initdb`` + ``pg_ctl`` in a temporary folder on a free loopback port.

    Run as the ``postgres`` user when the tests run as root (the server refuses root); stopped by the PID in
    its ``postmaster.pid`` with ``pg_ctl stop -m fast``. ``fsync`` is off: the tests kill clients, never it.
    """

    def __init__(self, bin_dir: Path, workdir: Path) -> None:
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "postgres.log"
        self.port = free_port()
        self.user = "laurel"
        self._run_as: str | None = None
        self._databases = 0

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**PEER_ENV, "LC_ALL": "C.UTF-8", "PGTZ": "UTC"}
        proc = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=self._run_as,
            cwd=self.workdir,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc

    def start(self) -> PostgresServer:
        """initdb, then start the server and wait until it accepts connections."""
        if os.geteuid() == 0:
            import pwd

            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("PostgreSQL refuses to run as root and there is no postgres user to run it as")
            self._run_as = "postgres"
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data_dir), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options
        )
        wait_until(lambda: port_open(self.port), 30, 0.05, f"PostgreSQL on port {self.port}")
        return self

    @property
    def pid(self) -> int | None:
        """The postmaster's PID (from ``postmaster.pid``), ``None`` when it is not running."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of a database on this server (psycopg 3)."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "laurel") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        self._databases += 1
        name = f"{prefix}_{self._databases}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` on this server (its PID file), then SIGKILL if it is still there."""
        pid = self.pid
        if pid is None:
            return
        try:
            self._run("pg_ctl", "stop", "-m", "fast", "-w", "-t", "30", "-D", str(self.data_dir))
        except (RuntimeError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def index_url_factory(request: pytest.FixtureRequest) -> Callable[[], str | None]:
    """New empty index URLs on the test's backend (``db_backend`` when it uses it, else SQLite: ``None``, the
    node's default file in its storage folder)."""
    if "db_backend" not in request.fixturenames or request.getfixturevalue("db_backend") == "sqlite":
        return lambda: None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database


def node_settings(
    workdir: Path,
    *,
    port: int | None = None,
    peers: Sequence[dict[str, Any]] | None = None,
    routing: Sequence[dict[str, Any]] | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """A node configuration (as a dict, YAML-ready) for tests: fast settle/scan/retries, API off."""
    node = {
        "ae_title": "LAUREL",
        "host": "127.0.0.1",
        "port": port or free_port(),
        "storage_dir": str(workdir / "node"),
        "settle_seconds": 1.0,
        "completion_scan_seconds": 0.2,
        "max_associations": 4,
        "max_pdu": 262144,
        "network_timeout": 20,
    }
    node.update(sections.pop("node", {}))
    settings: dict[str, Any] = {
        "node": node,
        "peers": list(
            peers
            if peers is not None
            else [
                {"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104},
                {"name": "echo", "ae_title": "ECHOSCU", "host": "127.0.0.1", "port": 105},
            ]
        ),
        "routing": list(routing or []),
        "api": {"enabled": False},
        "jobs": {"workers": 1, "poll_seconds": 0.05, "backoff_base_seconds": 0.1, "backoff_max_seconds": 0.5},
        # These nodes approve drafts as they are, which no learned candidate can beat on the held-out slices
        # (the active model is perfect on its own draft): the guard is off unless a test turns it on.
        # Guarded learning is tested in tests/unit/test_guarded_learning.py.
        "learning": {"guard": False},
    }
    settings.update(sections)
    return settings


class NodeProcess(ManagedProcess):
    """``laurel serve`` in a subprocess with a generated config (for kill -9 tests)."""

    def __init__(self, workdir: Path, settings: dict[str, Any], env: dict[str, str] | None = None) -> None:
        super().__init__(workdir, "node")
        self.settings = settings
        self.extra_env = dict(env or {})
        self.config_path = self.workdir / "node.yaml"
        self.config_path.write_text(yaml.safe_dump(settings))

    @property
    def port(self) -> int:
        """The node's DICOM port."""
        return int(self.settings["node"]["port"])

    @property
    def storage_dir(self) -> Path:
        """The node's storage folder."""
        return Path(self.settings["node"]["storage_dir"])

    def start(self, timeout: float = 60) -> NodeProcess:
        """Start ``python -m dicom_node serve`` and wait until it answers C-ECHO."""
        env = {**PEER_ENV, "PYTHONPATH": str(REPO), **self.extra_env}
        self._spawn([sys.executable, "-m", "dicom_node", "serve", "--config", str(self.config_path)], env)
        calling = next(p["ae_title"] for p in self.settings["peers"] if p.get("send_to_us", True))
        wait_until(
            lambda: (
                self.alive and port_open(self.port) and echo_ok(self.port, self.settings["node"]["ae_title"], calling)
            ),
            timeout,
            0.1,
            f"the node on port {self.port} (log: {self.log_path})",
        )
        return self

    def engine(self) -> Any:
        """An engine on the node's index (for assertions)."""
        from dicom_node.core.config import NodeConfig
        from dicom_node.core.engine import make_engine

        return make_engine(NodeConfig.load(self.config_path).node.db_url)


def dicomweb_plugin() -> str:
    """The path of Orthanc's DICOMweb plugin (Debian ``orthanc-dicomweb``), or skip saying what is missing."""
    for candidate in (
        Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
        *sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")),
    ):
        if candidate.exists():
            return str(candidate)
    pytest.skip("Orthanc's DICOMweb plugin is not installed (scripts/setup.sh installs orthanc-dicomweb)")


def orthanc_dicomweb_config(users: dict[str, str] | None = None) -> dict[str, Any]:
    """Orthanc settings that load the DICOMweb plugin at ``/dicom-web/`` (with HTTP basic ``users``, if any)."""
    config: dict[str, Any] = {
        "Plugins": [dicomweb_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
    }
    if users:
        config.update({"AuthenticationEnabled": True, "RegisteredUsers": dict(users)})
    return config
