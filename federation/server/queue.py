"""One worker thread that takes queued updates from the registry, oldest first, one at a time.

The queue is the ``fed_updates`` table: an upload is QUEUED (weights on disk, row committed) before the
202 goes out, so a crash or restart loses nothing; on start, updates a stopped worker left VALIDATING go
back to QUEUED. A single worker makes merges serial: the version chain never forks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from federation.server.metrics import FederationMetrics
from federation.server.processing import Processor
from federation.server.registry import FAILED, QUEUED, Registry, UpdateInfo, UpdateOutcome
from models.faults import FaultInterrupted

log = logging.getLogger(__name__)


class UpdateQueue:
    """The serialized update worker."""

    def __init__(
        self,
        registry: Registry,
        processor: Processor,
        metrics: FederationMetrics,
        *,
        poll_seconds: float = 2.0,
    ) -> None:
        self.registry = registry
        self.processor = processor
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: str | None = None  # uid being processed
        self.processed = 0
        self.listeners: list[Callable[[UpdateInfo], None]] = []

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Requeue interrupted updates and start the worker."""
        if self.running:
            return
        n = self.registry.requeue_interrupted()
        if n:
            log.info("requeued %d update(s) interrupted by the last stop", n)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="federation-queue", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Wake the worker (a new update was queued)."""
        self._wake.set()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the update in progress (it is requeued on the next start if cut short)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the update worker did not stop within %.0f s", timeout)
        self._thread = None

    def depth(self) -> int:
        """Updates waiting."""
        return self.registry.count_updates().get(QUEUED, 0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                update = self.registry.claim_next()
            except Exception:
                log.exception("cannot read the update queue; retrying")
                self._stop.wait(self.poll_seconds)
                continue
            if update is None:
                self.metrics.queue_depth.set(0)
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            self.run_one(update)

    def run_one(self, update: UpdateInfo) -> UpdateInfo:
        """Process one claimed update and record its terminal state (never raises)."""
        self.current = update.uid
        t0 = time.perf_counter()
        try:
            outcome = self.processor.process(update, self._stop)
        except FaultInterrupted:
            log.warning("update %s interrupted by the stop; it is processed again after the restart", update.uid)
            return update  # left VALIDATING: requeued at the next start
        except Exception as exc:
            log.exception("update %s failed on the server", update.uid)
            outcome = UpdateOutcome(FAILED, reason=f"server error while processing: {type(exc).__name__}: {exc}")
        finally:
            self.current = None
        try:
            done = self.registry.finish_update(update.uid, outcome)
        except Exception:
            log.exception("cannot record the outcome of update %s; it will be retried after restart", update.uid)
            return update
        self.processed += 1
        self.metrics.updates_finished.labels(model=done.model, state=done.state).inc()
        self.metrics.upload_to_terminal_seconds.labels(model=done.model, state=done.state).observe(
            self.processor.elapsed_since(done)
        )
        try:
            self.metrics.queue_depth.set(self.depth())
        except Exception:  # pragma: no cover - metrics must never stop the worker
            log.debug("queue depth unavailable", exc_info=True)
        log.info(
            "update %s: %s%s in %.2f s",
            done.uid,
            done.state,
            f" as version {done.version}" if done.version is not None else f" ({done.reason})",
            time.perf_counter() - t0,
        )
        for listener in self.listeners:
            try:
                listener(done)
            except Exception:  # pragma: no cover
                log.exception("update listener failed")
        return done
