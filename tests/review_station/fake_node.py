"""An in-memory stand-in for the node's API (a :class:`NodeClient` without HTTP), for what the real node cannot
do yet (answer 409 to a PUT naming another series) and for fast tests of the window's own behaviour."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from review_station.client import Conflict, NodeClient, NodeUnreachable
from review_station.domain import Segment, SeriesSummary, StudySummary, Volume


class FakeNode(NodeClient):
    """Studies of one series each, built from ``(image, draft, segments)``; records every write."""

    def __init__(self, series: list[tuple[np.ndarray, np.ndarray, list[Segment]]], url: str = "http://fake-node:1"):
        super().__init__(url, "tok")
        self._studies: dict[int, StudySummary] = {}
        self._data: dict[int, tuple[np.ndarray, np.ndarray, list[Segment]]] = {}
        self.corrected: dict[int, np.ndarray] = {}
        self.puts: list[tuple[int, str]] = []
        self.decisions: list[tuple[str, int, str]] = []
        self.refuse_put: str | None = None  # the 409 detail to answer to the next PUTs
        self.down = False  # the node cannot be reached
        for i, (image, draft, segments) in enumerate(series):
            sid, series_id = 10 + i, 100 + i
            summary = SeriesSummary(series_id, f"1.2.826.0.1.{series_id}", "SYNTHETIC thigh PD axial", "MR",
                                    image.shape[0], "thigh", 1, "SEGMENTED", None, True, False)  # fmt: skip
            self._studies[sid] = StudySummary(
                sid, f"1.2.826.0.2.{sid}", f"PATIENT^{i}", f"PID-{i}", "MR thigh", "20240102", "PENDING_REVIEW",
                None, f"2024-01-02T10:00:0{i}Z", None, 1, image.shape[0], series=(summary,),
            )  # fmt: skip
            self._data[series_id] = (image, draft, segments)

    def check(self) -> dict[str, Any]:
        return {"status": "ok"}

    def studies(self, state: str | None = "PENDING_REVIEW") -> list[StudySummary]:
        return [replace(s, series=()) for s in self._studies.values() if state is None or s.state == state]

    def study(self, study_id: int) -> StudySummary:
        s = self._studies[study_id]
        series = tuple(replace(x, has_corrected=x.id in self.corrected) for x in s.series)
        return replace(s, series=series)

    def volume(self, series_id: int) -> Volume:
        return Volume(self._data[series_id][0], (5.0, 1.0, 1.0))

    def labels(self, series_id: int, version: str = "draft") -> np.ndarray:
        if version != "draft" and series_id in self.corrected:
            return self.corrected[series_id].copy()
        return self._data[series_id][1].copy()

    def segments(self, series_id: int) -> list[Segment]:
        return list(self._data[series_id][2])

    def put_labels(self, series_id: int, labels: np.ndarray, SeriesInstanceUID: str) -> None:
        if self.down:
            raise NodeUnreachable(f"the node at {self.base_url} cannot be reached (test)")
        self.puts.append((series_id, SeriesInstanceUID))
        expected = next(x.SeriesInstanceUID for s in self._studies.values() for x in s.series if x.id == series_id)
        if self.refuse_put is not None or SeriesInstanceUID != expected:
            detail = self.refuse_put or f"series {series_id} is {expected}, not {SeriesInstanceUID}"
            raise Conflict(f"the node refused PUT /api/v1/series/{series_id}/labels (HTTP 409): {detail}", 409, detail)
        self.corrected[series_id] = labels.copy()

    def approve(self, study_id: int, StudyInstanceUID: str, comment: str | None = None) -> dict[str, Any]:
        self.decisions.append(("approve", study_id, StudyInstanceUID))
        self._studies[study_id] = replace(self._studies[study_id], state="APPROVED")
        return {"state": "APPROVED", "dice": {}}

    def reject(self, study_id: int, StudyInstanceUID: str, reason: str) -> dict[str, Any]:
        self.decisions.append(("reject", study_id, StudyInstanceUID))
        self._studies[study_id] = replace(self._studies[study_id], state="REJECTED")
        return {"state": "REJECTED"}
