"""The node console: admins only (login by token, CSRF on every form), pages with the node's real data,
the C-ECHO button against a real DCMTK peer, and the routing rule tester on phantom leg and thigh series."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from pathlib import Path

import pydicom
import pytest
import requests

from tests.peers import DcmtkStorescp, free_port, wait_until
from tests.workflow_fixtures import RunningNode, results_peer

PAGES = ["/console", "/console/peers", "/console/routing", "/console/dead-letters", "/console/models", "/console/audit"]
POSTS = [
    "/console/peers/modality/echo",
    "/console/dead-letters/1/requeue",
    "/console/models/leg/pin",
    "/console/models/leg/unpin",
    "/console/models/leg/rollback",
    "/console/logout",
]
ROUTING = [
    {"model": "leg", "match": {"SeriesDescription": "(?i)leg", "Modality": "^MR$"}},
    {"model": "thigh", "match": {"SeriesDescription": "(?i)thigh"}},
]


def token(running: RunningNode, name: str, role: str) -> str:
    """A new API token of ``role``."""
    from dicom_node.core.db import session_scope
    from dicom_node.core.tokens import create_token

    with session_scope(running.node.engine) as s:
        return create_token(s, name, role)


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, html[:2000]
    return found.group(1)


def login(running: RunningNode, admin_token: str) -> requests.Session:
    """A browser-like session logged in through the login form."""
    browser = requests.Session()
    form = browser.get(running.url + "/console/login", timeout=30)
    assert form.status_code == 200
    r = browser.post(
        running.url + "/console/login",
        data={"token": admin_token, "csrf": csrf_of(form.text), "next": "/console"},
        timeout=30,
        allow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/console"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie, cookie
    assert admin_token not in cookie
    return browser


def phantom_file(tmp_path: Path, region: str, seed: int) -> Path:
    """One slice of a SYNTHETIC phantom series of ``region`` (leg or thigh)."""
    from models.phantom import PhantomSpec, generate, write_series

    ph = generate(PhantomSpec(region=region, contrast="t1", seed=seed, n_slices=2, matrix=64))  # type: ignore[arg-type]
    return write_series(ph, tmp_path / f"{region}{seed}")[0]


def test_operators_get_403_and_strangers_the_login_form(workflow_node_factory: Callable[..., RunningNode]) -> None:
    running = workflow_node_factory()
    operator = {"Authorization": f"Bearer {token(running, 'Dr Reader', 'operator')}"}
    for path in PAGES:
        r = requests.get(running.url + path, headers=operator, timeout=30, allow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
        assert "needs an admin token" in r.text and "Dr Reader" in r.text and "--role admin" in r.text
    for path in POSTS:
        r = requests.post(running.url + path, headers=operator, data={}, timeout=30, allow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)

    # An operator's token in the login form: 403 with the reason, and no session cookie.
    browser = requests.Session()
    form = browser.get(running.url + "/console/login", timeout=30)
    r = browser.post(
        running.url + "/console/login",
        data={"token": operator["Authorization"][7:], "csrf": csrf_of(form.text)},
        timeout=30,
        allow_redirects=False,
    )
    assert r.status_code == 403 and "role 'operator'" in unescape(r.text)
    assert "laurel_console=" not in r.headers.get("set-cookie", "")
    r = browser.post(running.url + "/console/login", data={"token": "lrl_nope", "csrf": csrf_of(form.text)}, timeout=30)
    assert r.status_code == 401 and "unknown or revoked" in r.text

    # Nobody: a page sends the browser to the login form, a POST is refused.
    r = requests.get(running.url + "/console/peers", timeout=30, allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login?next=%2Fconsole%2Fpeers"
    r = requests.post(running.url + "/console/peers/modality/echo", timeout=30, allow_redirects=False)
    assert r.status_code == 401
    forged = requests.get(running.url + "/console", cookies={"laurel_console": "v1.1.9999999999.00"}, timeout=30)
    assert forged.url.endswith("/console/login?next=%2Fconsole")


def test_admin_pages_show_the_nodes_data_and_forms_need_the_csrf_token(node_api: RunningNode, tmp_path: Path) -> None:
    from dicom_node.core.db import Job, JobState, Series, session_scope

    def state_of(job_id: int) -> str:
        with session_scope(node_api.node.engine) as s:
            job = s.get(Job, job_id)
            assert job is not None
            return job.state

    browser = login(node_api, node_api.token)
    # A real dead letter: an export naming a peer that is not configured (the handler gives up at once).
    job_id = node_api.node.enqueue("export", {"peer": "gone-pacs", "paths": []})
    wait_until(lambda: state_of(job_id) == JobState.DEAD, 60, 0.1, "the export job is a dead letter")

    overview = browser.get(node_api.url + "/console", timeout=60)
    assert overview.status_code == 200
    assert re.search(r"PENDING_REVIEW</div><div class=\"v\">2<", overview.text), overview.text[:3000]
    assert overview.text.count("<svg") == 2  # intake rate, queue depth
    assert "gone-pacs" in overview.text  # the last errors
    assert "default-src 'none'" in overview.headers["content-security-policy"]

    peers = browser.get(node_api.url + "/console/peers", timeout=30)
    assert peers.status_code == 200 and "STORESCU" in peers.text  # the sending peer, with its last association
    modality_row = peers.text[peers.text.index('id="peer-modality"') :].split("</tr>")[0]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", modality_row), modality_row

    with session_scope(node_api.node.engine) as s:
        series_id = s.query(Series).order_by(Series.id).first().id  # type: ignore[union-attr]
    routing = browser.get(node_api.url + f"/console/routing?series={series_id}", timeout=60)
    assert routing.status_code == 200
    assert "Rule 1 matches: model <strong>leg</strong> would run" in routing.text
    assert "SYNTHETIC leg T1 axial" in routing.text

    letters = browser.get(node_api.url + "/console/dead-letters", timeout=30)
    assert "no peer named 'gone-pacs' is configured" in unescape(letters.text)
    models = browser.get(node_api.url + "/console/models", timeout=60)
    assert models.status_code == 200 and 'id="model-leg"' in models.text and "<svg" in models.text

    # Forms without the CSRF token, or with another session's, are refused; nothing happens.
    for data in ({}, {"csrf": "0" * 64}):
        r = browser.post(node_api.url + f"/console/dead-letters/{job_id}/requeue", data=data, timeout=30)
        assert r.status_code == 403 and "CSRF token" in r.text
    assert state_of(job_id) == JobState.DEAD
    r = browser.post(
        node_api.url + f"/console/dead-letters/{job_id}/requeue",
        data={"csrf": csrf_of(letters.text)},
        headers={"Origin": "http://evil.example"},
        timeout=30,
    )
    assert r.status_code == 403

    # With the token: requeued (and audited with who did it).
    r = browser.post(
        node_api.url + f"/console/dead-letters/{job_id}/requeue", data={"csrf": csrf_of(letters.text)}, timeout=30
    )
    assert r.status_code == 200 and r.url.endswith("/console/dead-letters")
    audit = browser.get(node_api.url + "/console/audit", timeout=30)
    assert "console_login" in audit.text and "Dr Test Reviewer" in audit.text
    assert f'{{"job_id": {job_id}, "kind": "export"}}' in unescape(audit.text)

    # Pin from the console, then unpin: the registry follows, and both are audited.
    r = browser.post(node_api.url + "/console/models/leg/pin", data={"csrf": csrf_of(models.text)}, timeout=60)
    assert r.status_code == 200 and "pinned" in r.text
    assert node_api.node.services.registry.state("leg")["pinned"] is True
    r = browser.post(node_api.url + "/console/models/leg/unpin", data={"csrf": csrf_of(r.text)}, timeout=60)
    assert node_api.node.services.registry.state("leg")["pinned"] is False

    # Logging out ends the session.
    r = browser.post(node_api.url + "/console/logout", data={"csrf": csrf_of(r.text)}, timeout=30)
    assert r.url.endswith("/console/login")
    assert browser.get(node_api.url + "/console", timeout=30).url.endswith("/console/login?next=%2Fconsole")


@pytest.mark.peers
def test_c_echo_button_reaches_a_dcmtk_peer_and_names_a_dead_one(
    workflow_node_factory: Callable[..., RunningNode], storescp_factory: Callable[..., DcmtkStorescp]
) -> None:
    scp = storescp_factory(aet="ARCHIVE").start()
    dead_port = free_port()
    running = workflow_node_factory(
        peers=[results_peer("archive", "ARCHIVE", scp.port), results_peer("old-pacs", "OLDPACS", dead_port)]
    )
    browser = login(running, running.token)
    page = browser.get(running.url + "/console/peers", timeout=30)

    r = browser.post(running.url + "/console/peers/archive/echo", data={"csrf": csrf_of(page.text)}, timeout=60)
    assert r.status_code == 200 and "/console/peers?echo=" in r.url
    assert "C-ECHO archive: succeeded" in r.text and "status 0x0000" in r.text

    r = browser.post(running.url + "/console/peers/old-pacs/echo", data={"csrf": csrf_of(page.text)}, timeout=60)
    assert r.status_code == 200 and "C-ECHO old-pacs: failed" in r.text
    assert f"no association with peer old-pacs (OLDPACS@127.0.0.1:{dead_port}): not reachable" in r.text
    row = r.text[r.text.index('id="peer-old-pacs"') :].split("</tr>")[0]
    assert "not reachable" in row and "failed" in row  # last error and last C-ECHO, read back from the index

    r = browser.post(running.url + "/console/peers/nobody/echo", data={"csrf": csrf_of(page.text)}, timeout=30)
    assert r.status_code == 404 and "no peer named" in r.text


def test_rule_tester_names_the_rule_for_leg_and_thigh_files(
    workflow_node_factory: Callable[..., RunningNode], tmp_path: Path
) -> None:
    running = workflow_node_factory(routing=ROUTING)
    browser = login(running, running.token)
    csrf = csrf_of(browser.get(running.url + "/console/routing", timeout=30).text)

    def upload(path: Path, called_ae: str = "LAUREL") -> requests.Response:
        with path.open("rb") as fh:
            return browser.post(
                running.url + "/console/routing/test",
                data={"csrf": csrf, "called_ae": called_ae},
                files={"file": (path.name, fh, "application/dicom")},
                timeout=120,
            )

    leg = upload(phantom_file(tmp_path, "leg", 7))
    assert leg.status_code == 200, leg.text
    assert "Rule 1 matches: model <strong>leg</strong> would run" in leg.text

    thigh_path = phantom_file(tmp_path, "thigh", 8)
    thigh = upload(thigh_path)
    assert thigh.status_code == 200, thigh.text
    assert "Rule 2 matches: model <strong>thigh</strong> would run" in thigh.text
    # Why rule 1 did not: its SeriesDescription regex against the value, per field.
    rule1 = thigh.text[thigh.text.index("<td rowspan") :].split('<td rowspan="2">2</td>')[0]
    assert "SYNTHETIC thigh T1 axial" in rule1 and "(?i)leg" in rule1 and "✗ no match" in rule1

    # A file with a Modality the leg rule does not take falls to no rule at all.
    ds = pydicom.dcmread(phantom_file(tmp_path, "leg", 9))
    ds.Modality = "CT"
    ct = tmp_path / "ct.dcm"
    ds.save_as(ct)
    r = upload(ct)
    assert "No rule matches" in r.text and "<code>CT</code>" in r.text and "<code>^MR$</code>" in r.text

    # DICOM header text is shown as text, never as markup.
    ds.Modality = "MR"
    ds.SeriesDescription = '<b onmouseover="x()">leg</b>'
    marked = tmp_path / "markup.dcm"
    ds.save_as(marked)
    r = upload(marked)
    assert "Rule 1 matches" in r.text and "<b onmouseover" not in r.text
    assert "&lt;b onmouseover=&#34;x()&#34;&gt;leg&lt;/b&gt;" in r.text

    # Not DICOM, too large, or without the CSRF token: refused with what to do.
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom" * 100)
    assert upload(junk).status_code == 422
    r = browser.post(
        running.url + "/console/routing/test",
        data={"csrf": csrf},
        files={"file": ("big.dcm", b"\0" * ((32 << 20) + (128 << 10)))},
        timeout=120,
    )
    assert r.status_code == 413 and "larger than 32 MiB" in r.text
    with thigh_path.open("rb") as fh:
        r = browser.post(running.url + "/console/routing/test", files={"file": fh}, timeout=60)
    assert r.status_code == 403

    # Nothing uploaded was stored: the index has no series, the storage folder no instance.
    from dicom_node.core.db import Series, session_scope

    with session_scope(running.node.engine) as s:
        assert s.query(Series).count() == 0
    instances = running.node.config.node.storage_dir / "instances"
    assert not instances.exists() or not any(instances.rglob("*.dcm"))
