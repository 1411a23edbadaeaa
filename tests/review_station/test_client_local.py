"""The node client's failure messages and body parsing (no server: a closed port is really unreachable),
and the offline file loader."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import requests

from review_station import client as cl
from review_station.domain import ProtocolError, Segment, StudySummary
from review_station.local import load_local


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_node_gives_an_actionable_message() -> None:
    c = cl.NodeClient(f"http://127.0.0.1:{closed_port()}", "tok", connect_timeout=1.0)
    with pytest.raises(cl.NodeUnreachable, match=r"cannot be reached.*laurel serve.*--node"):
        c.studies()
    with pytest.raises(cl.NodeUnreachable):
        c.health()


def test_missing_token_is_refused_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cl.TOKEN_ENV, raising=False)
    c = cl.NodeClient(f"http://127.0.0.1:{closed_port()}")
    assert not c.has_token
    with pytest.raises(cl.AuthError, match=r"LAUREL_TOKEN.*laurel token create"):
        c.studies()
    monkeypatch.setenv(cl.TOKEN_ENV, "from-env")
    assert cl.NodeClient("http://h:1").has_token


def test_token_never_in_repr() -> None:
    c = cl.NodeClient("http://127.0.0.1:8080/", "s3cret-token")
    assert "s3cret" not in repr(c) and c.base_url == "http://127.0.0.1:8080"
    with pytest.raises(ValueError, match="http://"):
        cl.NodeClient("127.0.0.1:8080", "t")


def test_auth_message_is_the_agreed_one() -> None:
    assert cl.AUTH_MESSAGE == "the token was refused by the node — ask for a new one with `laurel token create`"


def test_parse_npy_refuses_pickles_and_wrong_arrays() -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(cl.parse_npy(cl.npy_bytes(arr), dtype=np.uint8, ndim=3), arr)
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(cl.InvalidResponse, match=r"not a valid \.npy"):
        cl.parse_npy(buf.getvalue())
    with pytest.raises(cl.InvalidResponse, match="dtype int64"):
        cl.parse_npy(cl.npy_bytes(np.zeros((1, 1, 1), np.int64)), dtype=np.uint8)
    with pytest.raises(cl.InvalidResponse, match="2 dimensions"):
        cl.parse_npy(cl.npy_bytes(np.zeros((1, 1), np.uint8)), ndim=3)
    with pytest.raises(cl.InvalidResponse):
        cl.parse_npy(b"<html>proxy error</html>")
    with pytest.raises(ValueError, match="uint8"):
        cl.NodeClient("http://h:1", "t").put_labels(1, np.zeros((1, 1, 1), np.int32), "1.2.3")
    with pytest.raises(ValueError, match="SeriesInstanceUID"):
        cl.NodeClient("http://h:1", "t").put_labels(1, np.zeros((1, 1, 1), np.uint8), "")
    with pytest.raises(ValueError, match="reason"):
        cl.NodeClient("http://h:1", "t").reject(1, "1.2", "  ")
    with pytest.raises(ValueError, match="StudyInstanceUID"):
        cl.NodeClient("http://h:1", "t").approve(1, "", "ok")


def _response(status: int, body: object) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return r


class Recorder(requests.adapters.BaseAdapter):
    """A transport that records each request and answers with a canned response."""

    def __init__(self, status: int = 200, body: object = None) -> None:
        super().__init__()
        self.requests: list[requests.PreparedRequest] = []
        self.status, self.body = status, body if body is not None else {"state": "APPROVED"}

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        r = _response(self.status, self.body)
        r.request = request
        return r

    def close(self) -> None:
        pass


def recording_client(status: int = 200, body: object = None) -> tuple[cl.NodeClient, Recorder]:
    c = cl.NodeClient("http://node:1", "tok")
    rec = Recorder(status, body)
    c._session.mount("http://", rec)
    return c, rec


def test_client_names_the_series_and_study_on_screen() -> None:
    c, rec = recording_client()
    c.put_labels(7, np.zeros((1, 2, 2), np.uint8), "1.2.840.7")
    put = rec.requests[-1]
    assert put.method == "PUT" and put.url == "http://node:1/api/v1/series/7/labels?SeriesInstanceUID=1.2.840.7"
    c.approve(3, "1.2.840.3", "looks right")
    assert json.loads(rec.requests[-1].body) == {"StudyInstanceUID": "1.2.840.3", "comment": "looks right"}
    c.reject(3, "1.2.840.3", " motion ")
    assert json.loads(rec.requests[-1].body) == {"StudyInstanceUID": "1.2.840.3", "reason": "motion"}


def test_a_409_for_another_series_is_a_conflict_with_the_nodes_words() -> None:
    c, _ = recording_client(409, {"detail": "series 7 is not 1.2.840.7"})
    with pytest.raises(cl.Conflict, match=r"series 7 is not 1\.2\.840\.7") as err:
        c.put_labels(7, np.zeros((1, 2, 2), np.uint8), "1.2.840.7")
    assert err.value.status == 409


def test_error_details_are_readable() -> None:
    validation = {"detail": [{"loc": ["body", "reason"], "msg": "field required", "type": "missing"}]}
    assert cl._detail(_response(422, validation)) == "reason: field required"
    assert cl._detail(_response(409, {"detail": "study 3 is APPROVED"})) == "study 3 is APPROVED"
    assert cl._detail(_response(500, b"Internal Server Error")) == "Internal Server Error"


def test_domain_records_parse_the_contract_and_refuse_gaps() -> None:
    series = {"id": 5, "SeriesInstanceUID": "1.2.3", "SeriesDescription": "leg", "Modality": "MR",
              "instance_count": 30, "model": "leg", "model_version": 2, "state": "PENDING_REVIEW",
              "failure_reason": None, "has_draft": True, "has_corrected": False}  # fmt: skip
    s = StudySummary.from_json(
        {"id": 3, "StudyInstanceUID": "1.2", "PatientName": "Doe^Jane", "PatientID": "P1",
         "StudyDescription": "MR", "StudyDate": "20240101", "state": "PENDING_REVIEW", "failure_reason": None,
         "received_at": None, "completed_at": None, "series_count": 1, "instance_count": 30,
         "models": [{"name": "leg", "version": 2}], "series": [series]}
    )  # fmt: skip
    assert s.models_text == "leg v2" and s.series[0].has_draft and s.series[0].title == "leg — leg v2"
    assert s.in_progress_by is None and s.approved_by is None  # optional fields of the worklist row
    row = {"id": 4, "state": "PENDING_REVIEW", "in_progress_by": "Dr A", "approved_by": None}
    assert StudySummary.from_json(row).in_progress_by == "Dr A"
    with pytest.raises(ProtocolError, match="'id'"):
        StudySummary.from_json({"state": "X"})
    seg = Segment.from_json({"value": 2, "key": "soleus_left", "name": "Soleus (left)", "colour": [300, 0, 5]})
    assert seg.colour == (255, 0, 5)
    with pytest.raises(ProtocolError, match="colour"):
        Segment.from_json({"value": 2, "key": "k", "colour": "red"})
    with pytest.raises(ProtocolError, match=r"1\.\.255"):
        Segment.from_json({"value": 0, "key": "k", "colour": [1, 2, 3]})


# ---- offline files ---------------------------------------------------------------------------------
def test_load_local_npy_and_phantom_npz(tmp_path: Path, series) -> None:
    image, labels, _ = series
    np.save(tmp_path / "vol.npy", image)
    np.save(tmp_path / "lab.npy", labels)
    vol, lab, segs = load_local(tmp_path / "vol.npy", tmp_path / "lab.npy")
    np.testing.assert_array_equal(lab, labels)
    assert vol.spacing == (1.0, 1.0, 1.0) and [s.value for s in segs] == list(range(1, 13))
    np.savez(
        tmp_path / "gt.npz", labels=labels, spacing=np.array([6.0, 1.04, 1.04]), origin=np.zeros(3),
        label_values=np.arange(1, 13), label_keys=np.array([f"m{i}_right" for i in range(1, 13)]),
    )  # fmt: skip
    vol, lab, segs = load_local(tmp_path / "vol.npy", tmp_path / "gt.npz")
    assert vol.spacing == (6.0, 1.04, 1.04) and segs[0].key == "m1_right" and segs[0].name == "M1 right"
    vol, lab, segs = load_local(tmp_path / "vol.npy")
    assert not lab.any() and lab.shape == image.shape
    np.save(tmp_path / "bad.npy", labels[:2])
    with pytest.raises(ValueError, match="differ in shape"):
        load_local(tmp_path / "vol.npy", tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        load_local(tmp_path / "obj.npy")
