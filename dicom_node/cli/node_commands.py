"""The node's commands: ``serve``, ``status``, ``echo``, ``send``, ``requeue``, ``dead-letters``.

Each loads the configuration with :func:`dicom_node.cli.main.load_config` (a bad file exits with code 2 and the
field named) and calls one function. Heavy modules are imported inside the commands.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dicom_node.core.config import NodeConfig

if TYPE_CHECKING:
    from dicom_node.process.node import Node

ConfigOption = typer.Option(Path("config/node.yaml"), "--config", "-c", help="node configuration (YAML)")


def _load(config: Path) -> NodeConfig:
    from dicom_node.cli.common import load_config

    return load_config(config)


def _engine_if_exists(cfg: NodeConfig) -> Any:
    """The index engine, or ``None`` when a SQLite index does not exist yet (nothing received)."""
    from sqlalchemy.engine import make_url

    url = make_url(cfg.node.db_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return None
    return cfg.node.engine()


def build_node(cfg: NodeConfig, config_path: Path | None = None) -> Node:
    """The node ``laurel serve`` runs: the DICOM spine with the review workflow, its jobs and the API."""
    from dicom_node.process.node import build_node as build_workflow_node

    return build_workflow_node(cfg, config_path)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def _check_workflow(cfg: NodeConfig) -> None:
    """Refuse a configuration the workers could not start with (exit 2 and what to fix), before any child."""
    from dicom_node.work.workflow import WorkflowConfigError, federation_client

    try:
        federation_client(cfg)
    except WorkflowConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc


def serve(
    config: Path = ConfigOption,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
    one_process: bool = typer.Option(
        False, "--one-process", help="run intake, workers and API as threads of one process (development)"
    ),
) -> None:
    """Run the node until SIGTERM or Ctrl-C: an intake process (SCP), the API and `jobs.workers` workers."""
    from dicom_node.cli.common import configure_logging
    from dicom_node.process.reload import ReloadSignals, actor_of, answer, take_requests

    cfg = _load(config)
    configure_logging(verbose, process="supervisor" if not one_process else None)
    stop = _stop_on_signals()
    signals = ReloadSignals()  # before any thread or child: SIGHUP is read with its sender
    _check_workflow(cfg)
    if one_process:
        node = build_node(cfg, config)
        node.start()
        try:
            while not stop.is_set():
                sender = signals.wait(1.0)
                if sender is not None and not stop.is_set():
                    requests = take_requests(cfg.node.storage_dir)
                    outcome = node.reload_file(actor_of(requests, sender))
                    answer(cfg.node.storage_dir, requests, outcome)
        finally:
            node.stop()
        return
    from dicom_node.process.supervisor import Supervisor

    supervisor = Supervisor(config, cfg, verbose=verbose)
    supervisor.start()
    supervisor.run(stop, signals)


def worker(
    config: Path = ConfigOption,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
) -> None:
    """Run `jobs.workers` worker processes alone (on a host sharing the node's PostgreSQL index and storage)."""
    from dicom_node.cli.common import configure_logging

    cfg = _load(config)
    configure_logging(verbose, process="supervisor")
    stop = _stop_on_signals()
    _check_workflow(cfg)
    from dicom_node.process.supervisor import Supervisor

    supervisor = Supervisor(config, cfg, workers_only=True, verbose=verbose)
    supervisor.start()
    supervisor.run(stop)


def status_report(cfg: NodeConfig) -> dict[str, Any]:
    """Studies (state, series and instance counts), jobs by state, dead letters and unrouted series."""
    from sqlalchemy import func, select

    from dicom_node.core.db import Instance, Job, JobState, Series, Study, session_scope
    from dicom_node.core.jobs import dead_letters
    from dicom_node.intake.routing import unrouted_series

    report: dict[str, Any] = {
        "node": cfg.node.ae_title,
        "studies": [],
        "jobs": {},
        "dead_letters": [],
        "unrouted": [],
    }
    engine = _engine_if_exists(cfg)
    if engine is None:
        return report
    try:
        with session_scope(engine) as session:
            series_counts = {
                sid: n
                for sid, n in session.execute(select(Series.study_id, func.count()).group_by(Series.study_id)).all()
            }
            instance_counts = {
                sid: n
                for sid, n in session.execute(
                    select(Series.study_id, func.count(Instance.id))
                    .join(Instance, Instance.series_id == Series.id)
                    .group_by(Series.study_id)
                ).all()
            }
            for study in session.scalars(select(Study).order_by(Study.id)):
                report["studies"].append(
                    {
                        "id": study.id,
                        "state": study.state,
                        "failure_reason": study.failure_reason,
                        "series": series_counts.get(study.id, 0),
                        "instances": instance_counts.get(study.id, 0),
                        "received_at": study.received_at.isoformat() + "Z",
                        "completed_at": study.completed_at.isoformat() + "Z" if study.completed_at else None,
                        "files_deleted": study.files_deleted_at is not None,
                    }
                )
            for kind, state, count in session.execute(
                select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
            ).all():
                report["jobs"].setdefault(kind, {})[state] = count
            report["dead_letters"] = [
                {"id": j.id, "kind": j.kind, "attempts": j.attempts, "last_error": j.last_error}
                for j in dead_letters(session)
            ]
            report["unrouted"] = [
                {
                    "id": s.id,
                    "study_id": s.study_id,
                    "Modality": s.Modality,
                    "SeriesDescription": s.SeriesDescription,
                    "files_deleted": s.files_deleted_at is not None,
                }
                for s in unrouted_series(session)
            ]
            report["queued"] = session.scalar(
                select(func.count()).select_from(Job).where(Job.state.in_([JobState.QUEUED, JobState.FAILED]))
            )
    finally:
        engine.dispose()
    return report


def status(
    config: Path = ConfigOption,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Studies with their state and instance counts, jobs, dead letters and unrouted series."""
    cfg = _load(config)
    report = status_report(cfg)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"node {report['node']}: {len(report['studies'])} studies")
    for s in report["studies"]:
        reason = f"  ({s['failure_reason']})" if s["failure_reason"] else ""
        counts = f"{s['series']:>3} series {s['instances']:>6} instances"
        typer.echo(f"  study {s['id']:>5}  {s['state']:<15} {counts}{reason}")
    typer.echo("jobs:" if report["jobs"] else "jobs: none")
    for kind, states in sorted(report["jobs"].items()):
        typer.echo(f"  {kind:<12} " + "  ".join(f"{state} {count}" for state, count in sorted(states.items())))
    typer.echo(f"dead letters: {len(report['dead_letters'])}")
    for d in report["dead_letters"]:
        typer.echo(f"  job {d['id']:>5}  {d['kind']:<12} after {d['attempts']} attempts: {d['last_error']}")
    if report["unrouted"]:
        typer.echo(f"unrouted series (kept for retention.unrouted_days): {len(report['unrouted'])}")
        for u in report["unrouted"]:
            what = f"{u['Modality']} {u['SeriesDescription'] or ''}"
            typer.echo(f"  series {u['id']:>5} of study {u['study_id']}: {what}")


def _peer(cfg: NodeConfig, name: str) -> Any:
    """The configured peer ``name`` (name or AE title), or exit 2 naming the peers there are."""
    try:
        return cfg.peer(name)
    except KeyError as exc:
        typer.secho(f"error: {exc.args[0]}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc


def echo(
    peer: str = typer.Argument(..., help="a configured peer (name or AE title)"), config: Path = ConfigOption
) -> None:
    """C-ECHO a configured peer."""
    from dicom_node.work.export import echo_outcome

    cfg = _load(config)
    target = _peer(cfg, peer)
    if getattr(target, "type", "dimse") != "dimse":
        typer.secho(f"error: peer {target.name} is a DICOMweb peer; C-ECHO is for DIMSE peers", err=True)
        raise typer.Exit(code=2)
    outcome = echo_outcome(cfg.node.ae_title, target, timeout=cfg.node.network_timeout, tls=cfg.tls)
    if outcome.status is None:
        typer.secho(f"error: {outcome.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    typer.echo(outcome.message)
    if not outcome.ok:
        raise typer.Exit(code=1)


def send(
    peer: str = typer.Argument(..., help="a configured peer (name or AE title)"),
    files: list[Path] = typer.Argument(..., help="DICOM files to C-STORE as they are"),
    config: Path = ConfigOption,
) -> None:
    """C-STORE files to a configured peer, each with its own SOP class and transfer syntax (STOW-RS to a
    DICOMweb peer)."""
    from dicom_node.work.export import ExportError, ExportRefused, describe, send_objects

    cfg = _load(config)
    target = _peer(cfg, peer)
    try:
        objects = [describe(f) for f in files]
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    try:
        if getattr(target, "type", "dimse") == "dicomweb":
            from dicom_node.work.dicomweb import stow_objects

            report = stow_objects(target, objects)
        else:
            report = send_objects(
                cfg.node.ae_title,
                target,
                objects,
                max_pdu=cfg.node.max_pdu,
                timeout=cfg.node.network_timeout,
                tls=cfg.tls,
            )
    except (ExportError, ExportRefused) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from exc
    for obj in objects:
        code = report.statuses.get(obj.sop_instance_uid)
        typer.echo(f"{obj.path}: " + ("not sent (context refused)" if code is None else f"status 0x{code:04X}"))
    if not report.ok:
        raise typer.Exit(code=1)


def requeue(job_id: int = typer.Argument(..., help="a DEAD or FAILED job"), config: Path = ConfigOption) -> None:
    """Put a dead letter (or a failed job) back in the queue, due now."""
    from dicom_node.core.db import session_scope
    from dicom_node.core.jobs import requeue as requeue_job

    cfg = _load(config)
    engine = _engine_if_exists(cfg)
    if engine is None:
        typer.secho("error: the node has no index yet", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    try:
        with session_scope(engine) as session:
            job = requeue_job(session, job_id)
            kind = job.kind
    except (LookupError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from exc
    finally:
        engine.dispose()
    typer.echo(f"job {job_id} ({kind}) queued again")


def dead_letters_command(
    config: Path = ConfigOption,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """List dead letters: jobs that gave up, with their last error."""
    cfg = _load(config)
    letters = status_report(cfg)["dead_letters"]
    if as_json:
        typer.echo(json.dumps(letters, indent=2))
        return
    if not letters:
        typer.echo("no dead letters")
    for d in letters:
        typer.echo(f"job {d['id']:>5}  {d['kind']:<12} after {d['attempts']} attempts: {d['last_error']}")


def reload(
    config: Path = ConfigOption,
    timeout: float = typer.Option(60.0, "--timeout", help="seconds to wait for every process to apply it"),
) -> None:
    """Check the configuration file, then make the running `laurel serve` apply it without a restart."""
    import getpass

    from dicom_node.core.config_changes import ConfigChangeError, load_config_file
    from dicom_node.process.reload import request_reload

    try:
        cfg = load_config_file(config)
    except ConfigChangeError as exc:
        _print_refusal(exc.as_dict())
        raise typer.Exit(code=2) from exc
    result = request_reload(cfg.node.storage_dir, f"laurel reload ({getpass.getuser()})", timeout=timeout)
    outcome = result.get("outcome")
    if outcome == "refused":
        _print_refusal(result)
        raise typer.Exit(code=2)
    if outcome == "unchanged":
        typer.echo("nothing to apply: the configuration in force is the file's")
    else:
        changed = [*result.get("sections", {}), *result.get("listener", {})]
        typer.echo(f"applied: {', '.join(changed)} (by {', '.join(result.get('applied_by', [])) or 'nobody'})")
        if "node.ae_title" in changed or "node.port" in changed or "node.host" in changed:
            typer.echo("the intake process was restarted for the new listener")
    for field in result.get("needs_restart", []):
        typer.secho(f"not applied until laurel serve restarts: {field}", fg=typer.colors.YELLOW, err=True)
    if result.get("not_confirmed"):
        typer.secho(f"not confirmed by: {', '.join(result['not_confirmed'])}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


def _print_refusal(result: dict[str, Any]) -> None:
    for problem in result.get("problems", []):
        typer.secho(f"error: {problem['field']}: {problem['reason']}", fg=typer.colors.RED, err=True)
    typer.secho("refused: the configuration in force stays", err=True)


def register(app: typer.Typer) -> None:
    """Attach the node's commands to the root ``laurel`` app."""
    app.command("serve", help="run the node: intake (SCP), API and worker processes")(serve)
    app.command("reload", help="apply the configuration file to the running node (no restart)")(reload)
    app.command("worker", help="run worker processes alone (another host, shared PostgreSQL index)")(worker)
    app.command("status", help="studies, jobs, dead letters, unrouted series")(status)
    app.command("echo", help="C-ECHO a configured peer")(echo)
    app.command("send", help="C-STORE files to a configured peer")(send)
    app.command("requeue", help="requeue a dead letter")(requeue)
    app.command("dead-letters", help="list dead letters")(dead_letters_command)


__all__ = ["register", "status_report"]
