"""Run network work off the UI thread (``QThreadPool``) and report back through Qt signals.

A task's function gets a ``progress(text, done, total)`` callback; its result or exception comes back on
the UI thread as the ``done`` / ``failed`` signal. Tasks are kept referenced until they finish.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PyQt5 import sip
from PyQt5.QtCore import QObject, QRunnable, QThreadPool, pyqtSignal

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


class TaskSignals(QObject):
    """Signals of one task (a QRunnable cannot carry signals itself)."""

    done = pyqtSignal(object)
    failed = pyqtSignal(object)
    progress = pyqtSignal(str, int, int)
    finished = pyqtSignal()


class Task(QRunnable):
    """``fn(progress)`` in a pool thread."""

    def __init__(self, fn: Callable[[Progress], Any], name: str = "task") -> None:
        super().__init__()
        self.fn = fn
        self.name = name
        self.signals = TaskSignals()
        self.setAutoDelete(False)

    def run(self) -> None:
        try:
            result = self.fn(lambda text, done, total: self.signals.progress.emit(text, int(done), int(total)))
        except Exception as exc:
            log.info("task %s failed: %s", self.name, type(exc).__name__)
            self.signals.failed.emit(exc)
        else:
            self.signals.done.emit(result)
        finally:
            self.signals.finished.emit()


class TaskRunner(QObject):
    """Starts tasks on a private thread pool and tracks which are running."""

    busyChanged = pyqtSignal(bool)

    def __init__(self, parent: QObject | None = None, max_threads: int = 2) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._running: set[Task] = set()

    @property
    def busy(self) -> bool:
        """Whether a task is running."""
        return bool(self._running)

    def start(
        self,
        fn: Callable[[Progress], Any],
        *,
        on_done: Callable[[Any], None] | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
        name: str = "task",
    ) -> Task:
        """Run ``fn(progress)`` off the UI thread; callbacks run on the UI thread."""
        task = Task(fn, name)
        if on_done is not None:
            task.signals.done.connect(self._alive(on_done))
        if on_failed is not None:
            task.signals.failed.connect(self._alive(on_failed))
        if on_progress is not None:
            task.signals.progress.connect(self._alive(on_progress))
        task.signals.finished.connect(self._alive(lambda: self._finished(task)))
        was_busy = self.busy
        self._running.add(task)
        if not was_busy:
            self.busyChanged.emit(True)
        self.pool.start(task)
        return task

    def _alive(self, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback``, skipped once this runner (and the window that owns it) is deleted: a task that ends
        after its window closed must not touch widgets that are gone."""

        def call(*args: Any) -> None:
            if not sip.isdeleted(self):
                callback(*args)

        return call

    def _finished(self, task: Task) -> None:
        self._running.discard(task)
        if not self._running:
            self.busyChanged.emit(False)

    def wait(self, msecs: int = 30000) -> bool:
        """Block until the pool is idle (for shutdown)."""
        return bool(self.pool.waitForDone(msecs))
