"""The restart journey of :mod:`tests.restart.test_node_restarts` on a PostgreSQL index, killed with SIGKILL in
every state. A file of its own so the test runner's workers (one file each) run the journeys side by side.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.restart import test_node_restarts as journey

pytestmark = [pytest.mark.peers, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_a_study_survives_sigkill_in_every_state_on_postgresql(
    tmp_path: Path, restart_reference: Path, orthanc_factory: Any, request: pytest.FixtureRequest
) -> None:
    journey.test_a_study_survives_a_stop_in_every_state(
        signal.SIGKILL, "postgresql", tmp_path, restart_reference, orthanc_factory, request
    )
