"""Webhooks against real local HTTP receivers: signed, retried through the job queue until delivered once,
bounded in time and size, queued in the transaction of the state change that causes them."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from dicom_node.core.config import JobsSection, NodeConfig
from dicom_node.core.db import Job, JobState, Study, StudyState, session_scope, set_study_state
from dicom_node.core.engine import make_engine
from dicom_node.core.jobs import JobRunner, PermanentJobError, enqueue
from dicom_node.work.events import WEBHOOK_JOB, Events
from dicom_node.work.webhooks import WebhookUnavailable, deliver, webhook_handler
from dicom_node.work.workflow import dead_handlers
from tests.peers import wait_until
from tests.workflow_fixtures import RunningNode, phantom_series, send_files

SECRET = "s3cret-for-tests-only"
FAST = JobsSection(workers=1, max_attempts=3, backoff_base_seconds=0.01, backoff_max_seconds=0.05, poll_seconds=0.02)


@dataclass
class Receiver:
    """A real HTTP server in a thread: answers each request with the next scripted status (then the last one)."""

    statuses: list[int]
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def answer(self) -> int:
        n = len(self.requests)
        return self.statuses[min(n - 1, len(self.statuses) - 1)]


@pytest.fixture
def receiver() -> Iterator[Callable[[list[int]], Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(statuses: list[int]) -> Receiver:
        rec = Receiver(statuses)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                rec.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = rec.answer()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/laurel"
        return rec

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _config(tmp_path: Path, url: str, **hook: Any) -> NodeConfig:
    return NodeConfig.load(
        None,
        node={"storage_dir": str(tmp_path / "node"), "ae_title": "LAUREL_T"},
        jobs=FAST.model_dump(),
        webhooks=[
            {
                "name": "ops",
                "url": url,
                "events": ["study.pending_review", "study.failed", "study.exported", "job.dead"],
                "secret_env": "LAUREL_TEST_WEBHOOK_SECRET",
                **hook,
            }
        ],
    )


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("LAUREL_TEST_WEBHOOK_SECRET", SECRET)
    e = make_engine(f"sqlite:///{tmp_path / 'laurel.db'}")
    yield e
    e.dispose()


def _study(engine: Engine, state: StudyState) -> int:
    with session_scope(engine) as s:
        study = Study(StudyInstanceUID="1.2.826.0.1.3680043.8.498.1", PatientName="DOE^JANE", PatientID="MRN-77")
        s.add(study)
        s.flush()
        set_study_state(s, study, state, force=True)
        return study.id


def _verify(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """What a receiver does: recompute the signature over ``<timestamp>.<body>`` and compare in constant time."""
    expected = hmac.new(SECRET.encode(), headers["x-laurel-timestamp"].encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(headers["x-laurel-signature"], "sha256=" + expected.hexdigest())
    assert abs(time.time() - int(headers["x-laurel-timestamp"])) < 300  # a replay of an old delivery is refused
    event: dict[str, Any] = json.loads(body)
    assert headers["x-laurel-delivery"] == headers["idempotency-key"] == event["id"]
    assert headers["x-laurel-event"] == event["event"]
    return event


def test_a_failed_study_and_its_dead_letter_are_delivered_signed_once_after_a_500(
    tmp_path: Path, engine: Engine, receiver: Callable[[list[int]], Receiver]
) -> None:
    rec = receiver([500, 200])  # the first delivery fails, every later one succeeds
    cfg = _config(tmp_path, rec.url)
    study_id = _study(engine, StudyState.SEGMENTING)
    runner = JobRunner(engine, config=cfg.jobs)
    for kind, handler in dead_handlers(cfg).items():
        runner.on_dead(kind, handler)
    runner.add_handler(WEBHOOK_JOB, webhook_handler(cfg))

    def segment(_ctx: Any, _payload: dict[str, Any]) -> None:
        raise PermanentJobError("the model could not be loaded: /models/leg/1.2.826.0.1.3680043.8.498.9.laurel")

    runner.add_handler("segment", segment)
    with session_scope(engine) as s:
        enqueue(s, "segment", {"study_id": study_id})
    runner.start()
    try:

        def delivered() -> bool:
            with session_scope(engine) as s:
                hooks = s.scalars(select(Job).where(Job.kind == WEBHOOK_JOB)).all()
                return len(hooks) == 2 and all(j.state == JobState.DONE for j in hooks)

        wait_until(delivered, 30, 0.02, "both events delivered")
    finally:
        runner.stop()
    events = [_verify(h, b) for h, b in rec.requests]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_id.setdefault(e["id"], []).append(e)
    assert len(by_id) == 2 and len(rec.requests) == 3  # one 500 and two 200: each event delivered once
    first_body = rec.requests[0][1]
    assert [b for _h, b in rec.requests].count(first_body) == 2  # the retry sent the same bytes, same event id
    kinds = {e["event"]: e for e in events}
    assert kinds["study.failed"]["study"] == {
        "id": study_id,
        "state": "FAILED",
        "reason": "segmentation gave up: the model could not be loaded: /models/leg/<UID>.laurel",
    }
    assert kinds["job.dead"]["job"]["kind"] == "segment" and kinds["job.dead"]["study_id"] == study_id
    assert kinds["job.dead"]["node"] == "LAUREL_T"
    raw = b"".join(b for _h, b in rec.requests)
    assert b"DOE" not in raw and b"MRN-77" not in raw and b"1.2.826" not in raw  # no patient data, no UIDs


def test_events_are_queued_with_their_state_change_or_not_at_all(tmp_path: Path, engine: Engine) -> None:
    cfg = _config(tmp_path, "http://127.0.0.1:9/hook")
    events = Events(cfg)
    study_id = _study(engine, StudyState.SEGMENTING)
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        study = s.get(Study, study_id)
        assert study is not None
        set_study_state(s, study, StudyState.PENDING_REVIEW)
        events.study_changed(s, study)
        raise RuntimeError("the transaction fails after the event was queued")
    with session_scope(engine) as s:
        assert s.scalars(select(Job)).all() == []  # rolled back with the state change
        study = s.get(Study, study_id)
        assert study is not None and study.state == StudyState.SEGMENTING
        for state in (StudyState.PENDING_REVIEW, StudyState.APPROVED, StudyState.EXPORTED):
            set_study_state(s, study, state)
            events.study_changed(s, study)
    with session_scope(engine) as s:
        queued = [j.payload["event"] for j in s.scalars(select(Job).order_by(Job.id))]
    assert queued == ["study.pending_review", "study.exported"]  # APPROVED has no event
    only_failed = cfg.model_copy(update={"webhooks": [cfg.webhooks[0].model_copy(update={"events": ["study.failed"]})]})
    with session_scope(engine) as s:
        study = s.get(Study, study_id)
        assert study is not None
        set_study_state(s, study, StudyState.PENDING_REVIEW)
        assert Events(only_failed).study_changed(s, study) is None  # nobody subscribed: no job


@pytest.fixture
def silent_server() -> Iterator[Callable[[bytes | None], str]]:
    """A TCP server that accepts and then never answers (``None``), or trickles ``data`` one byte per 0.2 s."""
    stop = threading.Event()
    socks: list[socket.socket] = []

    def start(trickle: bytes | None) -> str:
        srv = socket.create_server(("127.0.0.1", 0))
        socks.append(srv)

        def serve() -> None:
            conn, _ = srv.accept()
            socks.append(conn)
            if trickle is None:
                stop.wait()
                return
            for byte in trickle:
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{srv.getsockname()[1]}/"

    yield start
    stop.set()
    for s in socks:
        s.close()


def test_a_receiver_that_never_answers_or_trickles_is_cut_off(
    tmp_path: Path, silent_server: Callable[[bytes | None], str]
) -> None:
    body = b'{"id":"x"}'
    silent = _config(tmp_path, silent_server(None), read_timeout_seconds=0.5, total_timeout_seconds=30).webhooks[0]
    with pytest.raises(WebhookUnavailable, match=r"TimeoutError|timed out"):
        deliver(silent, "job.dead", "x", body, SECRET.encode())
    # each byte comes within the read timeout, but the whole answer never does: the total bound cuts it off
    slow = _config(
        tmp_path,
        silent_server(b"HTTP/1.1 200 OK\r\n" + b"X" * 10_000),
        read_timeout_seconds=5,
        total_timeout_seconds=1.5,
    ).webhooks[0]
    with pytest.raises(WebhookUnavailable, match=r"no complete answer within 1\.5 s"):
        deliver(slow, "job.dead", "x", body, SECRET.encode())


def test_only_the_first_bytes_of_a_huge_answer_are_read_and_4xx_is_not_retried(
    tmp_path: Path, receiver: Callable[[list[int]], Receiver]
) -> None:
    big = receiver([200])
    hook = _config(tmp_path, big.url, max_response_bytes=1).webhooks[0]
    status, answer = deliver(hook, "job.dead", "y", b"{}", SECRET.encode())
    assert status == 200 and answer == b"o"
    gone = receiver([410])
    with pytest.raises(PermanentJobError, match="HTTP 410"):
        deliver(_config(tmp_path, gone.url).webhooks[0], "job.dead", "z", b"{}", SECRET.encode())


def test_webhook_config_refuses_plain_http_to_other_hosts_and_duplicate_names(tmp_path: Path) -> None:
    from dicom_node.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"use https:// for hooks\.example\.org"):
        _config(tmp_path, "http://hooks.example.org/laurel")
    assert _config(tmp_path, "http://hooks.example.org/laurel", allow_insecure_http=True).webhooks
    hook = {"name": "a", "url": "https://h.example.org/", "events": ["job.dead"], "secret_env": "X"}
    with pytest.raises(ConfigError, match="two webhooks share a name"):
        NodeConfig.load(None, webhooks=[hook, hook])


def test_a_whole_node_reports_a_draft_ready_and_a_failed_study(
    workflow_node_factory: Callable[..., RunningNode],
    receiver: Callable[[list[int]], Receiver],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real journey: a phantom study is segmented (study.pending_review), a single slice fails (study.failed)."""
    import pydicom

    monkeypatch.setenv("LAUREL_TEST_WEBHOOK_SECRET", SECRET)
    rec = receiver([200])
    hook = {
        "name": "ops",
        "url": rec.url,
        "events": ["study.pending_review", "study.failed"],
        "secret_env": "LAUREL_TEST_WEBHOOK_SECRET",
    }
    running = workflow_node_factory(webhooks=[hook])
    files, _ph = phantom_series(tmp_path / "phantom", seed=778)
    send_files(running.node.port, files[:1])  # one slice: the model cannot take it
    failed = running.wait_state(str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), {"FAILED"})
    other, _ph2 = phantom_series(tmp_path / "phantom2", seed=779)
    send_files(running.node.port, other)
    ready = running.wait_state(
        str(pydicom.dcmread(other[0], stop_before_pixels=True).StudyInstanceUID), {"PENDING_REVIEW"}
    )
    wait_until(lambda: len(rec.requests) >= 2, 60, 0.05, "both webhook deliveries")
    got = {e["event"]: e for e in (_verify(h, b) for h, b in rec.requests)}
    assert (
        got["study.failed"]["study"]["id"] == failed["id"] and "single slice" in got["study.failed"]["study"]["reason"]
    )
    assert got["study.pending_review"]["study"] == {"id": ready["id"], "state": "PENDING_REVIEW"}
    assert len(rec.requests) == 2
