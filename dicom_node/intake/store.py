"""Durable instance storage: durable before acknowledged.

Each received dataset is written exactly as it arrived (file meta + encoded dataset, never decoded) to a
temporary file in ``storage_dir/.incoming``, renamed to
``storage_dir/instances/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` (a tree of its own, so
no UID can name one of the node's folders), then the file and its folder
are fsync'd (in parallel: concurrent fsyncs share one filesystem journal commit, which saves a sync per
image), and the instance is indexed; only then does :meth:`Store.receive` return Success. A process crash
at any point leaves either no file or a complete one (the rename follows the complete write); a power
loss between the rename and the fsyncs can leave a partial file that was never acknowledged, which the
recovery scan at the next start removes (see below).

Durability of the index: on SQLite the store's own connection commits with ``synchronous=NORMAL`` (a commit
survives a process crash, not necessarily a power loss), because the files are the record: after an unclean
stop (no ``.clean-shutdown`` marker) :func:`dicom_node.intake.recovery.recover_unindexed` indexes every complete
received file the index lacks. Every other connection of the node keeps ``synchronous=FULL``. On PostgreSQL
the store's commits keep the server's ``synchronous_commit`` (a database server that crashes on its own, the
node still running, must not lose acknowledged rows: no recovery scan would follow).

Group commit: associations that store at the same time share one index transaction. The thread that gets
the commit lock first takes every pending instance (its own and those queued behind it), renames them,
fsyncs each touched directory once, commits once and wakes the others; each C-STORE still waits for the
commit that holds its instance. Same SOP Instance UID again (same series, same study): the first copy stays,
the answer is Success. An instance is identified by its study, series and SOP Instance UIDs together: a
SeriesInstanceUID already stored under another study, or a SOPInstanceUID under another series, is refused
(0xC000, "identity conflict") and logged, never mixed into another patient's series.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, Engine, case, update

from dicom_node.core.db import SeriesState, Study, StudyState, utcnow
from dicom_node.intake.files import (
    encode_file_meta,
)
from dicom_node.intake.files import fsync_dir as _fsync_dir
from dicom_node.intake.files import fsync_file as _fsync_file
from dicom_node.intake.files import wait_all as _wait_all
from dicom_node.intake.files import write_all as _write_all
from dicom_node.intake.received import (
    DatasetHeader,
    DatasetRefused,
    Incoming,
    StoreStatus,
    check_instance,
    inspect_dataset,
)
from dicom_node.intake.routing import is_own_result

if TYPE_CHECKING:
    from dicom_node.core.metrics import NodeMetrics
    from dicom_node.intake.routing import Router

logger = logging.getLogger(__name__)

INCOMING_DIR = ".incoming"
INSTANCES_DIR = "instances"
CLEAN_MARKER = ".clean-shutdown"
_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True)
class StoreResult:
    """What happened to one instance: the status to answer with and a short reason for failures."""

    status: StoreStatus
    comment: str | None = None
    path: Path | None = None
    duplicate: bool = False


@dataclass
class _Pending:
    item: Incoming
    header: DatasetHeader
    tmp: Path
    final: Path
    size: int = 0
    fd: int | None = None
    done: bool = False
    duplicate: bool = False
    conflict: str | None = None
    error: BaseException | None = None
    #: The routing rules in force when the instance's association was accepted (``None``: the store's own).
    router: Router | None = None


class Store:
    """Writes received instances durably and indexes them (see the module docstring)."""

    def __init__(
        self,
        storage_dir: Path,
        engine: Engine,
        router: Router,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.storage_dir = Path(storage_dir).resolve()
        self.incoming_dir = self.storage_dir / INCOMING_DIR
        self.instances_dir = self.storage_dir / INSTANCES_DIR
        self.engine = engine
        self.router = router
        self._keywords = self._keywords_for(router)
        self.metrics = metrics
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._assoc_studies: dict[int, set[int]] = defaultdict(set)
        self._raw: Any = None
        self._sync_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="laurel-fsync")
        self._known_dirs: set[Path] = set()
        self._paramstyle = engine.dialect.paramstyle
        to_db = DateTime().bind_processor(engine.dialect)
        self._stamp: Any = to_db if to_db is not None else (lambda value: value)

    @staticmethod
    def _keywords_for(router: Router) -> tuple[str, ...]:  # routing keywords, and whether a SEG is ours
        return tuple(sorted({*router.keywords, "Manufacturer", "ManufacturerModelName"}))

    def use_router(self, router: Router) -> None:
        """Route with ``router`` from now on (a reload; associations accepted before pass theirs to receive)."""
        self._keywords, self.router = self._keywords_for(router), router

    def open(self) -> None:
        """Prepare the folders, drop temporary files left by a crash, close associations a crash left open."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.incoming_dir.mkdir(exist_ok=True)
        if not self.instances_dir.exists():
            self.instances_dir.mkdir()
            _fsync_dir(self.storage_dir)
        stale = list(self.incoming_dir.iterdir())
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            logger.warning("removed %d unacknowledged partial files left by an earlier crash", len(stale))
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(Study)
                .where(Study.associations_open != 0)
                .values(associations_open=0, associations_ended_at=now, updated_at=now)
            )
        if result.rowcount:
            logger.info(
                "%d studies had associations open at the last stop; their settle time restarts",
                result.rowcount,
            )
        marker = self.storage_dir / CLEAN_MARKER
        if marker.exists():
            marker.unlink()
            _fsync_dir(self.storage_dir)
        else:
            from dicom_node.intake.recovery import recover_unindexed

            recover_unindexed(self)

    def mark_clean_shutdown(self) -> None:
        """Record that the index was closed cleanly (no recovery scan at the next start)."""
        marker = self.storage_dir / CLEAN_MARKER
        marker.touch()
        _fsync_dir(self.storage_dir)

    def index_existing(self, item: Incoming, header: DatasetHeader, path: Path) -> bool:
        """Index a complete file already at its final ``path`` (recovery); ``False`` if it was indexed."""
        pending = _Pending(item, header, path, path, path.stat().st_size)  # fd None: fsync'd by path
        self._commit(pending)
        self.association_closed(item.association_id)
        return not pending.duplicate and pending.conflict is None

    def close(self) -> None:
        """Return the index connection to the pool (as a FULL-synchronous connection again); final."""
        with self._commit_lock:
            raw, self._raw = self._raw, None
            if raw is not None:
                if self.engine.dialect.name == "sqlite":
                    cur = raw.cursor()
                    cur.execute("PRAGMA synchronous=FULL")
                    cur.close()
                raw.close()
        self._sync_pool.shutdown(wait=True)

    def path_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """Where an instance lives."""
        return self.instances_dir / study_uid / series_uid / f"{sop_instance_uid}.dcm"

    def stored(self, path: Path) -> str:
        """How the index records an instance's file: relative to ``storage_dir``."""
        return path.relative_to(self.storage_dir).as_posix()

    # ------------------------------------------------------------------ receive
    def receive(self, item: Incoming, router: Router | None = None) -> StoreResult:
        """Check, write, fsync, rename and index one instance; the status says what to answer.

        ``router``: the routing rules its association was accepted under (default: those in force now).
        """
        started = time.perf_counter()
        keywords = self._keywords if router is None or router is self.router else self._keywords_for(router)
        try:
            header = inspect_dataset(item.data, item.transfer_syntax, keywords, item.max_inflated_size)
            check_instance(header, item.sop_class_uid, item.sop_instance_uid, item.context_uid)
        except DatasetRefused as exc:
            logger.warning("refused SOP instance %s: %s", item.sop_instance_uid, exc)
            self._count("refused")
            return StoreResult(exc.status, str(exc))
        study_uid = header.text("StudyInstanceUID") or ""
        series_uid = header.text("SeriesInstanceUID") or ""
        final = self.path_for(study_uid, series_uid, item.sop_instance_uid)
        try:
            tmp, fd, size = self._write_temp(item)
        except OSError as exc:
            return self._os_failure(item, exc)
        pending = _Pending(item, header, tmp, final, size, fd, router=router)
        try:
            self._commit(pending)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            return self._os_failure(item, exc)
        except Exception:
            tmp.unlink(missing_ok=True)
            logger.exception("could not index SOP instance %s", item.sop_instance_uid)
            self._count("error")
            return StoreResult(StoreStatus.PROCESSING_FAILURE, "the node could not index the instance")
        finally:
            os.close(fd)
        if pending.conflict is not None:
            tmp.unlink(missing_ok=True)
            logger.warning("refused SOP instance %s: %s", item.sop_instance_uid, pending.conflict)
            self._count("conflict")
            return StoreResult(StoreStatus.CANNOT_UNDERSTAND, f"identity conflict: {pending.conflict}")
        if self.metrics is not None:
            self.metrics.store_seconds.observe(time.perf_counter() - started)
            if not pending.duplicate:
                self.metrics.bytes_received.inc(len(item.data))
        self._count("duplicate" if pending.duplicate else "stored")
        return StoreResult(StoreStatus.SUCCESS, None, final, pending.duplicate)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.instances_received.labels(result=result).inc()

    def _os_failure(self, item: Incoming, exc: OSError) -> StoreResult:
        if exc.errno in _OUT_OF_SPACE:
            logger.error("out of disk space storing SOP instance %s: %s", item.sop_instance_uid, exc)
            self._count("out_of_resources")
            return StoreResult(StoreStatus.OUT_OF_RESOURCES, "out of disk space")
        logger.error("could not write SOP instance %s: %s", item.sop_instance_uid, exc)
        self._count("out_of_resources")
        return StoreResult(StoreStatus.OUT_OF_RESOURCES, "storage error")

    def _write_temp(self, item: Incoming) -> tuple[Path, int, int]:
        """Write the file in ``.incoming``; returns its path, its still open descriptor (to fsync) and size."""
        fd, name = tempfile.mkstemp(suffix=".part", dir=self.incoming_dir)
        tmp = Path(name)
        meta = encode_file_meta(item)
        try:
            _write_all(fd, meta)
            _write_all(fd, item.data)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return tmp, fd, len(meta) + len(item.data)

    def _start_sync(self, pending: list[_Pending], dirs: set[Path]) -> list[Future[None]]:
        """fsync the placed files and their folders in parallel (concurrent fsyncs share a journal commit)."""
        tasks: list[Callable[[], None]] = [functools.partial(_fsync_file, p.fd, p.final) for p in pending]
        tasks.extend(functools.partial(_fsync_dir, d) for d in sorted(dirs))
        return [self._sync_pool.submit(task) for task in tasks]

    def _place(self, p: _Pending) -> list[Path]:
        """Rename a written file into place; returns folders created on the way (their parents need fsync)."""
        folder = p.final.parent
        created: list[Path] = []
        if folder not in self._known_dirs:
            created = self._ensure_dirs(folder)
        try:
            os.replace(p.tmp, p.final)
        except FileNotFoundError:  # the folder went away (retention removed an empty one): make it again
            self._known_dirs.discard(folder)
            created = self._ensure_dirs(folder)
            os.replace(p.tmp, p.final)
        self._known_dirs.add(folder)
        return created

    # ------------------------------------------------------------------ group commit
    def _commit(self, pending: _Pending) -> None:
        with self._queue_lock:
            self._queue.append(pending)
        with self._commit_lock:
            if not pending.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                try:
                    self._apply(batch)
                except BaseException as exc:
                    for p in batch:
                        p.error = exc
                finally:
                    for p in batch:
                        p.done = True
        if pending.error is not None:
            raise pending.error

    def _cursor(self) -> Any:
        if self._raw is None:
            raw = self.engine.raw_connection()
            if self.engine.dialect.name == "sqlite":
                cur = raw.cursor()
                cur.execute("PRAGMA synchronous=NORMAL")  # this connection only; see the module docstring
                cur.close()
            self._raw = raw
        return self._raw.cursor()

    def _sql(self, statement: str) -> str:
        return statement if self._paramstyle == "qmark" else statement.replace("?", "%s")

    def _apply(self, batch: list[_Pending]) -> None:
        """Index one batch in one transaction; files are renamed and their folders fsync'd before the commit.

        The hot path uses the DBAPI connection directly: SQLAlchemy's statement construction costs more
        than the SQL itself here. Statements are plain SQL that SQLite and PostgreSQL both accept; rows are
        updated in id order, so on PostgreSQL a worker's transaction on the same studies cannot deadlock with it.
        """
        now = utcnow()
        stamp = self._stamp(now)
        placed: list[_Pending] = []
        new_pairs: set[tuple[int, int]] = set()
        cur = self._cursor()
        syncing: list[Future[None]] = []
        try:
            fresh = self._classify(cur, batch)
            batch = [p for p in batch if p.conflict is None]
            dirs: set[Path] = set()
            for p in fresh:
                dirs.update(self._place(p))
                placed.append(p)
                dirs.add(p.final.parent)
            # The fsyncs run on the pool while this thread does the SQL; the commit waits for them.
            syncing = self._start_sync(fresh, dirs)
            study_ids = self._study_ids(cur, batch, stamp)
            series_ids = self._series_ids(cur, batch, study_ids, stamp)
            if fresh:
                cur.executemany(
                    self._sql("UPDATE series SET last_instance_at = ? WHERE id = ?"),
                    [
                        (stamp, sid)
                        for sid in sorted({series_ids[p.header.text("SeriesInstanceUID") or ""] for p in fresh})
                    ],
                )
                cur.executemany(
                    self._sql(
                        'INSERT INTO instance (series_id, "SOPInstanceUID", "SOPClassUID", '
                        '"TransferSyntaxUID", "InstanceNumber", path, size, received_at) '
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    ),
                    [
                        (
                            series_ids[p.header.text("SeriesInstanceUID") or ""],
                            p.item.sop_instance_uid,
                            p.item.sop_class_uid,
                            p.item.transfer_syntax,
                            p.header.number("InstanceNumber"),
                            self.stored(p.final),
                            p.size,
                            stamp,
                        )
                        for p in fresh
                    ],
                )
            increments: dict[int, int] = defaultdict(int)
            for p in batch:
                sid = study_ids[p.header.text("StudyInstanceUID") or ""]
                increments[sid] += 0
                pair = (p.item.association_id, sid)
                if sid not in self._assoc_studies.get(pair[0], ()) and pair not in new_pairs:
                    new_pairs.add(pair)
                    increments[sid] += 1
            for sid, increment in sorted(increments.items()):
                cur.execute(
                    self._sql(
                        "UPDATE study SET last_received_at = ?, associations_open = associations_open + ?, "
                        "updated_at = ? WHERE id = ?"
                    ),
                    (stamp, increment, stamp, sid),
                )
            _wait_all(syncing)
            assert self._raw is not None
            self._raw.commit()
        except BaseException:
            _wait_all(syncing, raise_errors=False)
            with contextlib.suppress(Exception):
                cur.close()
            self._rollback()
            for p in placed:
                p.final.unlink(missing_ok=True)
            raise
        cur.close()
        for assoc_id, sid in new_pairs:
            self._assoc_studies[assoc_id].add(sid)
        for p in batch:
            if p.duplicate:
                p.tmp.unlink(missing_ok=True)
        if self.metrics is not None:
            self.metrics.commit_batch_size.observe(len(batch))

    def _classify(self, cur: Any, batch: list[_Pending]) -> list[_Pending]:
        """Mark each instance new, a duplicate (same UIDs again: idempotent) or a conflict; returns the new ones.

        An instance is identified by (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID): a series UID
        already under another study, or a SOP Instance UID already under another series, is a conflict and
        refused, never mixed into the other patient's series.
        """
        series_owner: dict[str, str] = {}  # SeriesInstanceUID -> StudyInstanceUID (index, then this batch)
        sop_owner: dict[str, str] = {}  # SOPInstanceUID -> SeriesInstanceUID
        fresh: list[_Pending] = []
        for p in batch:
            study_uid = p.header.text("StudyInstanceUID") or ""
            series_uid = p.header.text("SeriesInstanceUID") or ""
            sop_uid = p.item.sop_instance_uid
            if series_uid not in series_owner:
                cur.execute(
                    self._sql(
                        'SELECT study."StudyInstanceUID" FROM series JOIN study ON study.id = series.study_id '
                        'WHERE series."SeriesInstanceUID" = ?'
                    ),
                    (series_uid,),
                )
                row = cur.fetchone()
                series_owner[series_uid] = str(row[0]) if row is not None else study_uid
            if series_owner[series_uid] != study_uid:
                p.conflict = "its SeriesInstanceUID is already stored under another study"
                continue
            if sop_uid not in sop_owner:
                cur.execute(
                    self._sql(
                        'SELECT series."SeriesInstanceUID" FROM instance JOIN series ON series.id = instance.series_id '
                        'WHERE instance."SOPInstanceUID" = ?'
                    ),
                    (sop_uid,),
                )
                row = cur.fetchone()
                if row is None:
                    sop_owner[sop_uid] = series_uid
                    fresh.append(p)
                    continue
                sop_owner[sop_uid] = str(row[0])
            if sop_owner[sop_uid] != series_uid:
                p.conflict = "its SOPInstanceUID is already stored under another series"
            else:
                p.duplicate = True
        return fresh

    def _rollback(self) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            raw.rollback()
        except Exception:
            logger.debug("rollback failed; the index connection is discarded", exc_info=True)
        # Discard it rather than return a synchronous=NORMAL connection to the pool; reconnect next time.
        raw.invalidate()

    def _ensure_dirs(self, series_dir: Path) -> list[Path]:
        """Create the study and series folders; returns parents whose entries changed (to fsync)."""
        changed: list[Path] = []
        for d in (series_dir.parent, series_dir):
            try:
                d.mkdir(mode=0o750)
            except FileExistsError:
                continue
            changed.append(d.parent)
        return changed

    def _study_ids(self, cur: Any, batch: list[_Pending], stamp: Any) -> dict[str, int]:
        ids: dict[str, int] = {}
        for p in batch:
            h = p.header
            uid = h.text("StudyInstanceUID") or ""
            if uid in ids:
                continue
            cur.execute(self._sql('SELECT id, state FROM study WHERE "StudyInstanceUID" = ?'), (uid,))
            row = cur.fetchone()
            if row is not None:
                ids[uid] = int(row[0])
                if row[1] != StudyState.RECEIVING:
                    logger.info("instance for study %s, which is %s: stored, study state unchanged", row[0], row[1])
                continue
            cur.execute(
                self._sql(
                    'INSERT INTO study ("StudyInstanceUID", "PatientName", "PatientID", "StudyDescription", '
                    '"StudyDate", state, received_at, last_received_at, associations_open, updated_at) '
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?) RETURNING id"
                ),
                (
                    uid,
                    h.text("PatientName"),
                    h.text("PatientID"),
                    h.text("StudyDescription"),
                    h.text("StudyDate"),
                    StudyState.RECEIVING.value,
                    stamp,
                    stamp,
                    stamp,
                ),
            )
            ids[uid] = int(cur.fetchone()[0])
            logger.info("study %s: first instance received (from %s)", ids[uid], p.item.calling_ae)
        return ids

    def _series_ids(self, cur: Any, batch: list[_Pending], study_ids: dict[str, int], stamp: Any) -> dict[str, int]:
        ids: dict[str, int] = {}
        for p in batch:
            h = p.header
            uid = h.text("SeriesInstanceUID") or ""
            if uid in ids:
                continue
            cur.execute(self._sql('SELECT id FROM series WHERE "SeriesInstanceUID" = ?'), (uid,))
            row = cur.fetchone()
            if row is not None:
                ids[uid] = int(row[0])
                continue
            attributes = {k: None if v is None else str(v) for k, v in h.attributes.items()}
            own = is_own_result(p.item.sop_class_uid, attributes)
            model = None if own else (self.router if p.router is None else p.router).route(p.item.called_ae, attributes)
            state = SeriesState.OWN_RESULT if own else SeriesState.ROUTED if model else SeriesState.UNROUTED
            study_id = study_ids[h.text("StudyInstanceUID") or ""]
            cur.execute(
                self._sql(
                    'INSERT INTO series (study_id, "SeriesInstanceUID", "SeriesNumber", "Modality", '
                    '"SeriesDescription", "BodyPartExamined", called_ae, calling_ae, model, state, '
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
                ),
                (
                    study_id,
                    uid,
                    h.number("SeriesNumber"),
                    h.text("Modality"),
                    h.text("SeriesDescription"),
                    h.text("BodyPartExamined"),
                    p.item.called_ae,
                    p.item.calling_ae,
                    model,
                    state.value,
                    stamp,
                    stamp,
                ),
            )
            ids[uid] = int(cur.fetchone()[0])
            logger.info(
                "series %s of study %s: %s",
                ids[uid],
                study_id,
                "a result of this node, back from the PACS; kept, not routed"
                if own
                else f"routed to model {model}"
                if model
                else "no routing rule matches; kept unrouted",
            )
        return ids

    # ------------------------------------------------------------------ associations
    def association_closed(self, association_id: int) -> None:
        """An association ended: the studies it delivered to start settling from now."""
        with self._commit_lock:
            studies = self._assoc_studies.pop(association_id, set())
            if not studies:
                return
            now = utcnow()
            with self.engine.begin() as conn:
                conn.execute(
                    update(Study)
                    .where(Study.id.in_(studies))
                    .values(
                        associations_open=case((Study.associations_open > 0, Study.associations_open - 1), else_=0),
                        associations_ended_at=now,
                        updated_at=now,
                    )
                )


__all__ = ["Incoming", "Store", "StoreResult", "StoreStatus", "encode_file_meta"]
