"""``laurel demo``: the whole loop on embedded defaults, on SYNTHETIC phantom studies.

A federation server and two nodes (two hospitals) start on loopback; Orthanc is the PACS when installed
(else an in-process storage SCP stands in and the demo sends with Laurel's own SCU). For each hospital a
phantom leg study goes into the PACS, the PACS routes it to the hospital's node (Orthanc's
``/modalities/{node}/store``, as an auto-routing rule does), the node segments it, a simulated radiologist
replaces the draft with the phantom's ground truth and approves, the approved SEG arrives in the PACS, the
node learns from the correction and uploads the weights, the federation validates and merges them, and both
nodes pull the new version. Every step prints its time.
"""

from __future__ import annotations

import io
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import requests
import yaml

from dicom_node.demo.processes import (
    Child,
    free_port,
    laurel_command,
    orthanc_binary,
    orthanc_config,
    wait_until,
)

OPERATOR = "Demo Radiologist"


@dataclass
class Site:
    """One hospital of the demo: its node and what happened to its study."""

    name: str
    ae_title: str
    dicom_port: int
    api_port: int
    folder: Path
    child: Child | None = None
    token: str = ""
    study_id: int | None = None
    series_id: int | None = None
    series_uid: str | None = None
    study_uid: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def api(self) -> str:
        """The node API's base URL."""
        return f"http://127.0.0.1:{self.api_port}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """An authenticated GET on the node API."""
        r = requests.get(self.api + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=60, **kwargs)
        r.raise_for_status()
        return r


class Reporter:
    """Prints each step with its elapsed time, and progress bars for the long ones."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.tty = sys.stdout.isatty()

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.t0:6.1f} s]"

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        """``with reporter.step('...'):`` prints the title, then done with the step's duration."""
        print(f"{self._stamp()} {title} ...", flush=True)
        started = time.monotonic()
        yield
        print(f"{self._stamp()}   done in {time.monotonic() - started:.1f} s", flush=True)

    def note(self, text: str) -> None:
        """An indented fact line."""
        print(f"           {text}", flush=True)

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float, expected: float) -> Any:
        """Poll with a progress bar scaled to ``expected`` seconds."""
        started = time.monotonic()
        last_print = -1.0

        def tick() -> Any:
            nonlocal last_print
            value = predicate()
            elapsed = time.monotonic() - started
            frac = min(elapsed / expected, 0.99) if not value else 1.0
            bar = "#" * int(frac * 30)
            line = f"           [{bar:<30}] {what} {elapsed:5.1f} s"
            if self.tty:
                print("\r" + line, end="" if not value else "\n", flush=True)
            elif value or elapsed - last_print >= 5:
                print(line, flush=True)
                last_print = elapsed
            return value

        return wait_until(tick, timeout, what, interval=0.3)


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    import os
    import subprocess

    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:])} failed: {proc.stderr.strip()[-1500:]}")
    return proc.stdout.strip()


def _node_config(site: Site, pacs: dict[str, Any], federation: dict[str, Any], pubkey: str) -> Path:
    cfg = {
        "node": {
            "ae_title": site.ae_title,
            "host": "127.0.0.1",
            "port": site.dicom_port,
            "storage_dir": str(site.folder / "storage"),
            "settle_seconds": 2,
            "completion_scan_seconds": 0.5,
        },
        "peers": [
            {
                "name": "pacs",
                "ae_title": pacs["ae_title"],
                "host": "127.0.0.1",
                "port": pacs["port"],
                "send_to_us": True,
                "receive_results": True,
            }
        ],
        "routing": [{"model": "leg", "match": {"Modality": "MR", "SeriesDescription": "(?i)leg"}}],
        "api": {"enabled": True, "host": "127.0.0.1", "port": site.api_port},
        "federation": {
            "url": federation["url"],
            "api_key_env": "LAUREL_FEDERATION_KEY",
            "server_public_key": pubkey,
            "sync_interval_seconds": 5,
        },
        "jobs": {"workers": 2, "max_attempts": 20, "backoff_base_seconds": 1, "backoff_max_seconds": 10},
        # One approval per site: a real site's default (defer) would keep it as the first reference series and
        # learn from the fourth; the demo learns at once, judged on held-out slices (docs/sysadmin.md).
        "learning": {"fallback": "holdout"},
    }
    path = site.folder / "node.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_demo(workdir: Path, keep: bool = False) -> dict[str, Any]:
    """Run the whole loop; returns the summary. Processes are stopped whatever happens."""
    from models.phantom import cohort, generate, write_series

    rep = Reporter()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    children: list[Child] = []
    stops: list[Callable[[], None]] = []
    summary: dict[str, Any] = {"workdir": str(workdir)}
    print("Laurel demo — every image here is a SYNTHETIC phantom; no patient data is used.\n", flush=True)
    try:
        # 1. Federation server with two sites.
        fed_port = free_port()
        fed_dir = workdir / "federation"
        fed_cfg = {
            "server": {"host": "127.0.0.1", "port": fed_port, "data_dir": str(fed_dir / "data")},
            "validation": {"threshold": 0.7, "tolerance": 0.05, "default_subjects": 2, "default_slices": 10},
            "merge": {"strategy": "linear", "weight": 0.5},
            "models": ["leg"],
        }
        fed_dir.mkdir(parents=True)
        fed_yaml = fed_dir / "federation.yaml"
        fed_yaml.write_text(yaml.safe_dump(fed_cfg, sort_keys=False))
        fed_url = f"http://127.0.0.1:{fed_port}"
        sites = [
            Site("hospital-a", "LAUREL_A", free_port(), free_port(), workdir / "hospital-a"),
            Site("hospital-b", "LAUREL_B", free_port(), free_port(), workdir / "hospital-b"),
        ]
        with rep.step("Starting the federation server and registering two hospitals"):
            keys = {
                s.name: _run([*laurel_command(), "federation", "add-site", s.name, "--config", str(fed_yaml)])
                for s in sites
            }
            pubkey = _run([*laurel_command(), "federation", "keygen", "--config", str(fed_yaml)]).splitlines()[-1]
            fed = Child(
                "federation",
                [*laurel_command(), "federation", "serve", "--config", str(fed_yaml)],
                fed_dir / "federation.log",
            ).start()
            children.append(fed)
            rep.wait(
                "federation server up",
                partial(_up, fed, fed_url + "/health"),
                timeout=180,
                expected=20,
            )
            rep.note(f"federation: {fed_url}  (dashboard {fed_url}/dashboard)")

        # 2. The PACS.
        pacs_port, pacs_http = free_port(), free_port()
        pacs = {"ae_title": "ORTHANC", "port": pacs_port}
        orthanc = orthanc_binary()
        with rep.step("Starting the PACS" + (" (Orthanc)" if orthanc else " (in-process stand-in SCP)")):
            if orthanc:
                cfg_path = orthanc_config(
                    workdir / "pacs",
                    dicom_port=pacs_port,
                    http_port=pacs_http,
                    ae_title="ORTHANC",
                    modalities={s.name: (s.ae_title, "127.0.0.1", s.dicom_port) for s in sites},
                )
                pacs_child = Child("orthanc", [orthanc, str(cfg_path)], workdir / "pacs" / "orthanc.log").start()
                children.append(pacs_child)
                rep.wait(
                    "Orthanc up",
                    partial(_up, pacs_child, f"http://127.0.0.1:{pacs_http}/system"),
                    timeout=60,
                    expected=3,
                )
                rep.note(f"Orthanc: DICOM 127.0.0.1:{pacs_port}, REST http://127.0.0.1:{pacs_http}")
                pacs_store = None
            else:
                from dicom_node.demo.standin import StandInPacs

                pacs_store = StandInPacs("ORTHANC", pacs_port, workdir / "pacs").start()
                stops.append(pacs_store.stop)
                rep.note(f"stand-in PACS: DICOM 127.0.0.1:{pacs_port}")

        # 3. Two nodes.
        with rep.step("Starting two Laurel nodes (SCP + API + jobs)"):
            for s in sites:
                cfg_path = _node_config(s, pacs, {"url": fed_url}, pubkey)
                s.token = _run(
                    [*laurel_command(), "token", "create", OPERATOR, "--role", "admin", "--config", str(cfg_path)]
                ).splitlines()[-1]
                s.child = Child(
                    s.name,
                    [*laurel_command(), "serve", "--config", str(cfg_path)],
                    s.folder / "node.log",
                    env={"LAUREL_FEDERATION_KEY": keys[s.name]},
                ).start()
                children.append(s.child)
            for s in sites:
                child = s.child
                assert child is not None
                rep.wait(
                    f"{s.name} up",
                    partial(_up, child, s.api + "/health"),
                    timeout=180,
                    expected=20,
                )
                rep.note(f"{s.name}: DICOM {s.ae_title}@127.0.0.1:{s.dicom_port}, API {s.api}")

        # 4. Phantom studies into the PACS, routed to the nodes.
        specs = cohort("demo_t1_leg", 2)
        truths: dict[str, np.ndarray] = {}
        with rep.step("Generating SYNTHETIC T1 leg studies and routing them from the PACS to the nodes"):
            for s, spec in zip(sites, specs, strict=True):
                ph = generate(spec)
                truths[s.name] = ph.labels
                files = write_series(ph, s.folder / "phantom")
                rep.note(
                    f"{s.name}: {len(files)} slices {ph.image.shape[1]}x{ph.image.shape[2]}, "
                    f"spacing {ph.spacing[0]:.1f}x{ph.spacing[1]:.2f}x{ph.spacing[2]:.2f} mm"
                )
                if orthanc:
                    ids = [
                        requests.post(
                            f"http://127.0.0.1:{pacs_http}/instances", data=f.read_bytes(), timeout=60
                        ).json()["ParentStudy"]
                        for f in files
                    ]
                    r = requests.post(
                        f"http://127.0.0.1:{pacs_http}/modalities/{s.name}/store",
                        json={"Resources": [ids[0]], "Synchronous": True},
                        timeout=300,
                    )
                    r.raise_for_status()
                else:
                    assert pacs_store is not None
                    pacs_store.send(files, s.ae_title, s.dicom_port)

        # 5. Autosegmentation.
        with rep.step("Waiting for study completion and autosegmentation (draft DICOM-SEG)"):
            for s in sites:
                studies = rep.wait(
                    f"{s.name} PENDING_REVIEW",
                    partial(_pending, s),
                    timeout=600,
                    expected=25,
                )
                s.study_id = int(studies[0]["id"])
                detail = s.get(f"/api/v1/studies/{s.study_id}").json()
                seg_series = [se for se in detail["series"] if se["has_draft"]]
                s.series_id = int(seg_series[0]["id"])
                s.series_uid = str(seg_series[0]["SeriesInstanceUID"])
                s.study_uid = str(detail["StudyInstanceUID"])
                draft = np.load(
                    io.BytesIO(s.get(f"/api/v1/series/{s.series_id}/labels", params={"version": "draft"}).content),
                    allow_pickle=False,
                )
                from dicom_node.work.review import dice_scores

                values = sorted(int(v) for v in np.unique(truths[s.name]) if v)
                s.facts["draft_dice"] = dice_scores(truths[s.name], draft, values)["overall"]
                rep.note(
                    f"{s.name}: draft by {seg_series[0]['model']} v{seg_series[0]['model_version']}, "
                    f"Dice vs ground truth {s.facts['draft_dice']:.3f}"
                )

        # 6. The radiologist corrects and approves.
        with rep.step("Simulated radiologist: correct the draft (ground truth) and approve"):
            for s in sites:
                buf = io.BytesIO()
                np.save(buf, truths[s.name].astype(np.uint8), allow_pickle=False)
                h = {"Authorization": f"Bearer {s.token}"}
                requests.put(
                    f"{s.api}/api/v1/series/{s.series_id}/labels",
                    data=buf.getvalue(),
                    params={"SeriesInstanceUID": s.series_uid},  # every write names what it is for
                    headers=h,
                    timeout=120,
                ).raise_for_status()
                r = requests.post(
                    f"{s.api}/api/v1/studies/{s.study_id}/approve",
                    json={"comment": "demo: corrected to ground truth", "StudyInstanceUID": s.study_uid},
                    headers=h,
                    timeout=300,
                )
                r.raise_for_status()
                s.facts["approved_at"] = time.monotonic()
                rep.note(f"{s.name}: approved; jobs queued: {', '.join(j['kind'] for j in r.json()['jobs'])}")

        # 7. The approved SEG arrives in the PACS.
        with rep.step("Approved SEGs arriving in the PACS"):
            for s in sites:
                if orthanc:
                    found = rep.wait(
                        f"{s.name} SEG in Orthanc",
                        partial(_seg_in_orthanc, pacs_http, s),
                        timeout=120,
                        expected=3,
                    )
                else:
                    assert pacs_store is not None
                    found = rep.wait(
                        f"{s.name} SEG at the PACS",
                        partial(pacs_store.seg_from, s.ae_title),
                        timeout=120,
                        expected=3,
                    )
                s.facts["seg_in_pacs"] = found
                rep.note(f"{s.name}: {found}")

        # 8. Local learning and federation.
        with rep.step("Local incremental learning on each node, then upload to the federation"):
            for s in sites:
                st = rep.wait(f"{s.name} learned", partial(_local_revision, s), timeout=600, expected=40)
                s.facts["local_revision"] = st
                rep.note(
                    f"{s.name}: new local model revision {st['revision']} (v{st['package_version']}); "
                    f"{st.get('verdict_reason') or 'not judged'}"
                )
            uploading = [s for s in sites if s.facts["local_revision"].get("verdict") != "rejected"]
            for s in sites:
                if s not in uploading:  # the guard kept the active model: nothing to share from this site
                    rep.note(f"{s.name}: the guard kept the active revision, so nothing is uploaded")
            for s in uploading:
                job = rep.wait(f"{s.name} upload", partial(_done_job, s, "upload"), timeout=600, expected=10)
                s.facts["update_id"] = (job.get("result") or {}).get("update_id")
        with rep.step("Federation: validate each update on private reference data, merge, publish"):
            if not uploading:
                rep.note("no site uploaded an update (every candidate was kept back by its guard)")
            for s in uploading:
                uid = s.facts.get("update_id")
                status = rep.wait(
                    f"{s.name} update",
                    partial(_terminal, fed_url, keys, s.name, uid),
                    timeout=900,
                    expected=60,
                )
                s.facts["update"] = status
                rep.note(
                    f"{s.name}: update {status.get('state')} "
                    + (f"as version {status.get('version')}" if status.get("version") else "")
                    + (
                        f" (validation Dice {status['merged_dice'] or status['candidate_dice']:.3f})"
                        if (status.get("merged_dice") or status.get("candidate_dice")) is not None
                        else ""
                    )
                    + (f" — {status.get('reason')}" if status.get("reason") else "")
                )
        with rep.step("Both nodes pull the newest shared version"):
            latest = requests.get(
                f"{fed_url}/api/v1/models/leg", headers={"Authorization": f"Bearer {keys[sites[0].name]}"}, timeout=30
            ).json()
            newest = int(latest.get("latest_version") or 0)
            for s in sites:
                got = rep.wait(
                    f"{s.name} sync",
                    partial(_has_federation_version, s, newest),
                    timeout=300,
                    expected=10,
                )
                rep.note(f"{s.name}: active leg model is federation v{got['federation_version']}")
            summary["federation_latest_version"] = newest
        summary["sites"] = {s.name: {k: v for k, v in s.facts.items() if k != "approved_at"} for s in sites}
        _print_summary(summary, sites, fed_url, rep)
        if keep:
            _wait_for_interrupt()
        return summary
    finally:
        for child in reversed(children):
            child.stop()
        for stop in stops:
            stop()


def _wait_for_interrupt() -> None:
    """Block until Ctrl+C (SIGINT) or SIGTERM."""
    import signal
    import threading

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print("servers running; Ctrl+C stops them", flush=True)
    while not done.wait(1.0):
        pass


def _up(child: Child, url: str) -> bool:
    child.check()
    return requests.get(url, timeout=2).ok


def _pending(site: Site) -> list[dict[str, Any]]:
    studies: list[dict[str, Any]] = site.get("/api/v1/studies", params={"state": "PENDING_REVIEW"}).json()["studies"]
    return studies


def _seg_in_orthanc(http_port: int, site: Site) -> str | None:
    r = requests.post(
        f"http://127.0.0.1:{http_port}/tools/find",
        json={"Level": "Series", "Query": {"Modality": "SEG"}, "Expand": True},
        timeout=10,
    )
    for series in r.json():
        desc = series.get("MainDicomTags", {}).get("SeriesDescription", "")
        if "Approved" in desc and site.facts.get("seen") != series["ID"]:
            return f"SEG series '{desc}' ({len(series.get('Instances', []))} instance)"
    return None


def _local_revision(site: Site) -> dict[str, Any] | None:
    state = site.get("/api/v1/models/leg").json()
    local = [r for r in state["revisions"] if r["source"] == "local"]
    return local[-1] if local else None


def _done_job(site: Site, kind: str) -> dict[str, Any] | None:
    jobs = site.get("/api/v1/jobs", params={"kind": kind}).json()["jobs"]
    done = [j for j in jobs if j["state"] == "DONE"]
    dead = [j for j in jobs if j["state"] == "DEAD"]
    if dead:
        raise RuntimeError(f"{site.name}: {kind} job failed for good: {dead[0]['last_error']}")
    return done[0] if done else None


def _terminal(fed_url: str, keys: dict[str, str], site: str, update_id: str | None) -> dict[str, Any] | None:
    if update_id is None:
        raise RuntimeError(f"{site}: the upload job recorded no update id")
    r = requests.get(
        f"{fed_url}/api/v1/updates/{update_id}", headers={"Authorization": f"Bearer {keys[site]}"}, timeout=10
    )
    body: dict[str, Any] = r.json()
    return body if body.get("state") in ("ACCEPTED", "REJECTED", "FAILED") else None


def _has_federation_version(site: Site, version: int) -> dict[str, Any] | None:
    state: dict[str, Any] = site.get("/api/v1/models/leg").json()
    return state if int(state["federation_version"]) >= version else None


def _print_summary(summary: dict[str, Any], sites: list[Site], fed_url: str, rep: Reporter) -> None:
    print("\n=== Summary (SYNTHETIC phantom data) ===", flush=True)
    for s in sites:
        f = s.facts
        upd = f.get("update", {})
        print(
            f"{s.name}: draft Dice {f.get('draft_dice', float('nan')):.3f} -> approved SEG in PACS; "
            f"local revision {f.get('local_revision', {}).get('revision')}; "
            f"federation update {upd.get('state')}" + (f" (v{upd.get('version')})" if upd.get("version") else ""),
            flush=True,
        )
    print(f"federation: leg model now at version {summary.get('federation_latest_version')}", flush=True)
    print(f"total time: {time.monotonic() - rep.t0:.1f} s\n", flush=True)
    print("Next steps (with `laurel demo --keep` the servers keep running until Ctrl+C):", flush=True)
    print(
        f"  review station:  .venv/bin/laurel review --node {sites[0].api} --token {sites[0].token}",
        flush=True,
    )
    print("                   (a token of the demo profile only; real nodes: `laurel token create`)", flush=True)
    print(f"  dashboard:       {fed_url}/dashboard", flush=True)
