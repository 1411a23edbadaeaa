"""The entry point of one child process of ``laurel serve`` / ``laurel worker``:
``python -m dicom_node.process.child ROLE --config FILE [--index N]``.

Roles: ``intake`` (SCP, store, completion scheduler; never imports TensorFlow), ``api`` (the HTTP API) and
``worker`` (job handlers, models). A child dies with its supervisor (``PR_SET_PDEATHSIG``), so a SIGKILL of
``laurel serve`` leaves no orphan holding the DICOM port or a job; state is rebuilt from the index by the
next start.

SIGHUP (from the supervisor) makes a child re-read the configuration file and apply its reloadable sections
(:func:`apply_reload`); SIGUSR1 makes the intake stop listening and exit once its open associations have
finished (up to ``jobs.stop_grace_seconds``), so that a new intake can listen as newly configured.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicom_node.core.config import NodeConfig

logger = logging.getLogger(__name__)

ROLES = ("intake", "api", "worker")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_BE = 2


def lower_io_priority(level: int = 7) -> None:
    """Put this process in the lowest best-effort I/O class (as ``ionice -c2 -n7``), so the intake's fsyncs
    go first while a worker reads model libraries or images (Linux; a no-op elsewhere)."""
    import platform

    number = _IOPRIO_SET.get(platform.machine())
    if number is None:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(number, _IOPRIO_WHO_PROCESS, 0, (_IOPRIO_CLASS_BE << 13) | level)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        logger.debug("could not lower the I/O priority")


def load_config_or_exit(path: Path) -> NodeConfig:
    """The node configuration, or exit 2 with the validation message (the supervisor checked it already)."""
    from dicom_node.core.config import ConfigError, NodeConfig

    try:
        return NodeConfig.load(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


class _Signals:
    """What the supervisor asks of a child: stop (SIGTERM, SIGINT), reload (SIGHUP), drain (SIGUSR1)."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.stop = False
        self.reload = False
        self.drain = False
        for signum, flag in ((signal.SIGTERM, "stop"), (signal.SIGINT, "stop"), (signal.SIGHUP, "reload")):
            signal.signal(signum, self._setter(flag))
        signal.signal(signal.SIGUSR1, self._setter("drain", "stop"))

    def _setter(self, *flags: str) -> Any:
        def handler(_signum: int, _frame: object) -> None:
            for flag in flags:
                setattr(self, flag, True)
            self.wake.set()

        return handler

    def serve(self, apply: Callable[[], None]) -> None:
        """Until asked to stop, call ``apply`` at each reload."""
        while not self.stop:
            self.wake.wait(1.0)
            self.wake.clear()
            if self.reload and not self.stop:
                self.reload = False
                apply()


def apply_reload(config_path: Path, child: str, current: NodeConfig, apply: Callable[[NodeConfig], None]) -> None:
    """Re-read the file and ``apply`` the current configuration with its reloadable sections, then acknowledge
    to the supervisor; a file that no longer validates (edited again meanwhile) is logged and left alone."""
    from dicom_node.core.config_changes import ConfigChangeError, load_config_file, merge_reloadable
    from dicom_node.process.reload import acknowledge, current_generation

    storage = current.node.storage_dir
    generation = current_generation(storage)
    try:
        # The API and the workers take a new AE title too (write-backs call with it); the intake gets a new
        # process for a new listener instead (SIGUSR1).
        apply(merge_reloadable(current, load_config_file(config_path), listener=child != "intake"))
    except ConfigChangeError as exc:
        logger.error("%s: the configuration file no longer validates, nothing reloaded: %s", child, exc)
    except Exception:
        logger.exception("%s: the reload failed; the configuration in force stays", child)
    acknowledge(storage, child, generation)


def run_intake(config_path: Path) -> None:
    """Serve DICOM until SIGTERM (or SIGUSR1: a new listener is needed; open associations finish first)."""
    from dicom_node.core.metrics import NodeMetrics
    from dicom_node.intake.service import IntakeService
    from dicom_node.process.reload import acknowledge, current_generation

    signals = _Signals()
    # The generation is read before the file this intake runs with: what it acknowledges, it has applied.
    generation = current_generation(load_config_or_exit(config_path).node.storage_dir)
    cfg = load_config_or_exit(config_path)
    intake = IntakeService(cfg, NodeMetrics())
    intake.start()
    acknowledge(cfg.node.storage_dir, "intake", generation)
    logger.info("intake: %s on port %d", cfg.node.ae_title, intake.port)
    try:
        signals.serve(lambda: apply_reload(config_path, "intake", intake.config, intake.reload))
    finally:
        if signals.drain:
            logger.info("intake: stops listening for a new listener; open associations may finish")
        intake.stop(cfg.jobs.stop_grace_seconds if signals.drain else 0.0)


def run_api(config_path: Path) -> None:
    """Serve the HTTP API until SIGTERM (uvicorn handles the signal and drains open requests)."""
    import uvicorn

    from dicom_node.api.app import create_app
    from dicom_node.core.metrics import NodeMetrics
    from dicom_node.process.reload import request_reload
    from dicom_node.work.workflow import build_services, federation_client

    cfg = load_config_or_exit(config_path)
    metrics = NodeMetrics()
    engine = cfg.node.engine()
    services = build_services(cfg, engine, metrics, federation_client(cfg))
    services.config_path = config_path
    services.request_reload = lambda actor: request_reload(cfg.node.storage_dir, actor, audited=True)

    def reload_api(_signum: int, _frame: object) -> None:
        def apply(new: NodeConfig) -> None:
            services.config = new
            logger.info("api: configuration reloaded")

        apply_reload(config_path, "api", services.config, apply)

    signal.signal(signal.SIGHUP, reload_api)  # uvicorn handles SIGTERM and SIGINT only
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services),
            host=cfg.api.host,
            port=cfg.api.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=3,
        )
    )
    logger.info("api: http://%s:%d", cfg.api.host, cfg.api.port)
    server.run()
    engine.dispose()


def run_worker(config_path: Path, index: int) -> None:
    """Claim and run jobs until SIGTERM, at the configured lower CPU priority."""
    from dicom_node.core.metrics import NodeMetrics
    from dicom_node.work.worker import WorkerService

    signals = _Signals()
    cfg = load_config_or_exit(config_path)
    if cfg.jobs.worker_nice:
        os.nice(cfg.jobs.worker_nice)
        lower_io_priority()
    worker = WorkerService(cfg, NodeMetrics(), threads=cfg.jobs.threads_per_worker)
    worker.start()
    logger.info("worker %d: claiming jobs (nice %d)", index, cfg.jobs.worker_nice)
    try:
        signals.serve(lambda: apply_reload(config_path, f"worker{index}", worker.config, worker.reload))
    finally:
        worker.stop(timeout=cfg.jobs.stop_grace_seconds)


def main(argv: list[str] | None = None) -> None:
    """Parse ``ROLE --config FILE [--index N]`` and run that role."""
    parser = argparse.ArgumentParser(prog="laurel-child", description=__doc__)
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    die_with_parent()
    from dicom_node.process.reload import unblock_sighup

    unblock_sighup()  # the supervisor blocks it to read its sender; a child takes it by handler
    from dicom_node.core.logs import configure_logging

    configure_logging(args.verbose, process=f"{args.role}{args.index if args.role == 'worker' else ''}")
    if args.role == "intake":
        run_intake(args.config)
    elif args.role == "api":
        run_api(args.config)
    else:
        run_worker(args.config, args.index)
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is committed; skip interpreter teardown (TensorFlow's can take seconds).
    os._exit(0)


if __name__ == "__main__":
    main()
