"""``laurel serve`` as processes: intake, API and workers apart; the intake never loads TensorFlow, keeps
answering while every worker is busy, and a child that dies is started again.

Real processes, found through ``/proc``: the supervisor's children, their command lines and memory maps.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from dicom_node.core.db import Job, JobState, Study, StudyState, session_scope
from tests.peers import NodeProcess, echo_ok, node_settings, store_raw, wait_until, write_study
from tests.workflow_fixtures import phantom_series


def _children(pid: int) -> dict[str, int]:
    """Role name (``intake``, ``api``, ``worker0``…) → PID of each live child of ``pid``."""
    found: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            words = [a.decode() for a in argv if a]
            if "dicom_node.process.child" in words:
                role = words[words.index("dicom_node.process.child") + 1]
                index = words[words.index("--index") + 1]
                found[f"{role}{index}" if role == "worker" else role] = int(child)
    return found


def _all_children(pid: int, count: int) -> dict[str, int] | None:
    children = _children(pid)
    return children if len(children) == count else None


def _maps_tensorflow(pid: int) -> bool:
    """Whether TensorFlow's shared library is mapped into the process (it is, once a model ran)."""
    # the library's file name, not any path with "tensorflow" in it (pytest names tmp_path after the test)
    return "libtensorflow" in Path(f"/proc/{pid}/maps").read_text()


def _jobs(engine: Any, kind: str, state: JobState) -> int:
    with session_scope(engine) as session:
        return int(
            session.scalar(select(func.count()).select_from(Job).where(Job.kind == kind, Job.state == state)) or 0
        )


def _states(engine: Any) -> list[str]:
    with session_scope(engine) as session:
        return [s.state for s in session.scalars(select(Study))]


def test_intake_api_and_workers_are_processes_and_the_intake_never_loads_tensorflow(tmp_path: Path) -> None:
    settings = node_settings(
        tmp_path,
        routing=[{"model": "leg", "match": {"Modality": "MR"}}],
        jobs={"workers": 2, "poll_seconds": 0.05},
    )
    node = NodeProcess(tmp_path / "run", settings).start(timeout=120)
    try:
        children = wait_until(lambda: _all_children(node.pid, 3), 60, 0.2, "3 children")
        assert set(children) == {"intake", "worker0", "worker1"}  # the API is off in these settings
        files, _phantom = phantom_series(tmp_path / "study", 3, n_slices=6, matrix=128)  # SYNTHETIC leg
        assert store_raw(node.port, files) == [0] * len(files)
        engine = node.engine()
        wait_until(lambda: StudyState.PENDING_REVIEW in _states(engine), 300, 0.5, "a draft made by a worker")
        workers_with_tf = [
            name for name, pid in children.items() if name.startswith("worker") and _maps_tensorflow(pid)
        ]
        assert workers_with_tf, "a worker ran the model, so TensorFlow is mapped there"
        assert not _maps_tensorflow(children["intake"]), "the intake process must never load TensorFlow"
        engine.dispose()
    finally:
        node.stop(timeout=30)


def test_intake_answers_while_every_worker_is_busy_and_a_dead_child_comes_back(tmp_path: Path) -> None:
    faults = tmp_path / "faults"
    settings = node_settings(
        tmp_path,
        routing=[{"model": "leg", "match": {"Modality": "MR"}}],
        jobs={"workers": 2, "poll_seconds": 0.05},
    )
    env = {"LAUREL_FAULT_HOLD": "segment.start", "LAUREL_FAULT_DIR": str(faults)}
    node = NodeProcess(tmp_path / "run", settings, env=env).start(timeout=120)
    try:
        engine = node.engine()
        for n in range(2):  # two studies: each worker holds one segment job at its start
            study = write_study(tmp_path / f"busy{n}", series=1, instances=3, rows=32, columns=32)
            assert store_raw(node.port, study.paths) == [0] * 3
        wait_until(lambda: _jobs(engine, "segment", JobState.RUNNING) == 2, 180, 0.2, "both workers busy")
        later = write_study(tmp_path / "later", series=2, instances=10, rows=64, columns=64)
        assert store_raw(node.port, later.paths) == [0] * len(later.paths)
        assert echo_ok(node.port, "LAUREL", "ECHOSCU")
        assert _jobs(engine, "segment", JobState.RUNNING) == 2  # still both busy: the intake did not wait on them

        children = _children(node.pid)
        os.kill(children["intake"], signal.SIGKILL)
        wait_until(
            lambda: _children(node.pid).get("intake") not in (None, children["intake"]),
            60,
            0.2,
            "a new intake process",
        )
        wait_until(lambda: echo_ok(node.port, "LAUREL", "ECHOSCU"), 60, 0.2, "C-ECHO from the new intake")
        again = write_study(tmp_path / "again", series=1, instances=3, rows=32, columns=32)
        assert store_raw(node.port, again.paths) == [0] * 3
        assert "intake (pid" in node.log() and "exited with" in node.log()
        engine.dispose()
    finally:
        node.stop(timeout=30)
    assert node.proc is None


def test_workers_import_models_only_once_images_stop_arriving_or_a_model_job_is_due(tmp_path: Path) -> None:
    """Right after a start a PACS sends its backlog: the workers import TensorFlow only once the intake is quiet
    (``jobs.warm_delay_seconds``, then ``jobs.warm_quiet_seconds`` without an image), unless a model job is due."""
    import threading
    import time

    settings = node_settings(
        tmp_path,
        routing=[{"model": "leg", "match": {"SeriesDescription": "(?i)leg"}}],  # the stream below is not routed
        jobs={"workers": 1, "poll_seconds": 0.05, "warm_delay_seconds": 6, "warm_quiet_seconds": 3},
    )
    node = NodeProcess(tmp_path / "run", settings).start(timeout=120)
    try:
        worker = wait_until(lambda: _all_children(node.pid, 2), 60, 0.2, "intake and one worker")["worker0"]
        stop = threading.Event()
        sent: list[int | None] = []

        def stream() -> None:  # a study every ~0.3 s, for as long as the test wants
            n = 0
            while not stop.is_set():
                study = write_study(tmp_path / f"backlog{n}", series=1, instances=4, rows=32, columns=32)
                sent.extend(store_raw(node.port, study.paths))
                n += 1
                stop.wait(0.3)

        sender = threading.Thread(target=stream, daemon=True)
        sender.start()
        started = time.monotonic()
        while time.monotonic() - started < 16:  # well past the delay: the images keep the import away
            assert not _maps_tensorflow(worker), "the worker imported TensorFlow while images were arriving"
            stop.wait(0.5)
        stop.set()
        sender.join(60)
        assert sent and set(sent) == {0}
        wait_until(lambda: _maps_tensorflow(worker), 180, 0.5, "the import once the intake is quiet")
    finally:
        node.stop(timeout=30)

    late = node_settings(
        tmp_path / "late",
        routing=[{"model": "leg", "match": {"Modality": "MR"}}],
        jobs={"workers": 1, "poll_seconds": 0.05, "warm_delay_seconds": 600},
    )
    node = NodeProcess(tmp_path / "run_late", late).start(timeout=120)
    try:
        files, _phantom = phantom_series(tmp_path / "leg", 5, n_slices=6, matrix=128)  # SYNTHETIC leg
        assert store_raw(node.port, files) == [0] * len(files)
        engine = node.engine()
        # a due segment job ends the 10-minute wait: the draft comes long before it
        wait_until(lambda: StudyState.PENDING_REVIEW in _states(engine), 300, 0.5, "a draft")
        engine.dispose()
    finally:
        node.stop(timeout=30)
