"""The entry point of one child process of ``laurel serve`` / ``laurel worker``:
``python -m dicom_node.process.child ROLE --config FILE [--index N]``.

Roles: ``intake`` (SCP, store, completion scheduler; never imports TensorFlow), ``api`` (the HTTP API) and
``worker`` (job handlers, models). A child dies with its supervisor (``PR_SET_PDEATHSIG``), so a SIGKILL of
``laurel serve`` leaves no orphan holding the DICOM port or a job; state is rebuilt from the index by the
next start.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

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


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def run_intake(config_path: Path) -> None:
    """Serve DICOM until SIGTERM."""
    from dicom_node.core.metrics import NodeMetrics
    from dicom_node.intake.service import IntakeService

    stop = _stop_event()
    cfg = load_config_or_exit(config_path)
    intake = IntakeService(cfg, NodeMetrics())
    intake.start()
    logger.info("intake: %s on port %d", cfg.node.ae_title, intake.port)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        intake.stop()


def run_api(config_path: Path) -> None:
    """Serve the HTTP API until SIGTERM (uvicorn handles the signal and drains open requests)."""
    import uvicorn

    from dicom_node.api.app import create_app
    from dicom_node.core.metrics import NodeMetrics
    from dicom_node.work.workflow import build_services, federation_client

    cfg = load_config_or_exit(config_path)
    metrics = NodeMetrics()
    engine = cfg.node.engine()
    services = build_services(cfg, engine, metrics, federation_client(cfg))
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

    stop = _stop_event()
    cfg = load_config_or_exit(config_path)
    if cfg.jobs.worker_nice:
        os.nice(cfg.jobs.worker_nice)
        lower_io_priority()
    worker = WorkerService(cfg, NodeMetrics(), threads=cfg.jobs.threads_per_worker)
    worker.start()
    logger.info("worker %d: claiming jobs (nice %d)", index, cfg.jobs.worker_nice)
    try:
        while not stop.wait(1.0):
            pass
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
