"""The web console end to end: a real headless chromium (Debian's package, driven by Playwright) against a real
``opencsbs serve --inventory examples/sandbox.yaml``: log in, see every check_protectable answer of the example,
create a policy, run it, watch its backup reach ``available``, restore it and find the data hash unchanged, see a
failure's reason, and see nothing of another project with its token. The run saves the screenshots of
docs/console.md into docs/console/.

One browser and one server for the module; these tests run on the SQLite pass only (the console reaches the
database only through the API, which the other tests check on both databases).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import EXAMPLE_INVENTORY, USE_PG, free_port, require_component

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(USE_PG, reason="browser tests run on the SQLite pass only")]

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "console"
WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
WEB_1_DISKS = ("0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a01", "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a02")
DB_1 = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b0002"
DB_1_SYS = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b1001"
SECRET_1 = "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d0013"
SPARE_DISK = "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c0012"

#: every answer of examples/sandbox.yaml for project demo: server name -> (code, words of the message)
REFUSED = {
    "broken-1": ("CSBS.6006", "status (ERROR) is not allowed to protect"),
    "resizing-1": ("CSBS.6006", "status (RESIZE(resize_migrating)) is not allowed to protect"),
    "paused-1": ("CSBS.6006", "status (PAUSED) is not allowed to protect"),
    "gone-1": ("CSBS.6001", "The server has stopped."),
    "diskless-1": ("CSBS.6007", "No volume attached to the server"),
    "cluster-a": ("CSBS.6010", "is shareable volume"),
    "dss-1": ("CSBS.6033", "is dss"),
    "remote-1": ("CSBS.6027", "does not support backup"),
}
ALLOWED = ("web-1", "db-1", "bms-1")


def _cli(data_dir: Path, *args: str, stdin: bytes | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSBS_")}
    r = subprocess.run([sys.executable, "-m", "opencsbs", *args, "--data-dir", str(data_dir)], input=stdin,
                       capture_output=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(base_url, data_dir)`` of a real ``opencsbs serve`` with the example inventory (workers and scheduler
    on, the example's AZ ``az-nobackup`` refusing backups)."""
    data = tmp_path_factory.mktemp("console") / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSBS_")}
    env["OPENCSBS_CLOUD__AZS_WITHOUT_BACKUP"] = '["az-nobackup"]'
    log = open(data.parent / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "opencsbs", "serve", "--data-dir", str(data), "--port", str(port),
                             "--inventory", str(EXAMPLE_INVENTORY)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (data.parent / "serve.log").read_text()
        try:
            if httpx.get(base + "/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "opencsbs serve did not answer"
        time.sleep(0.2)
    yield base, data
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def browser():
    """One headless chromium for the module (Debian's, from scripts/services/browser.sh)."""
    path = os.environ.get("OPENCSBS_TEST_CHROMIUM", "")
    require_component(bool(path) and os.access(path, os.X_OK),
                      "no chromium: run scripts/services/browser.sh start (OPENCSBS_TEST_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        require_component(False, "Python playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page (own storage) on the console; fails the test if the page asks anything but opencsbs or
    throws a script error."""
    base, _ = server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    elsewhere: list[str] = []
    errors: list[str] = []
    pg.on("request", lambda r: None if r.url.startswith(base + "/") or r.url.startswith("data:")
          else elsewhere.append(r.url))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(base + "/console/")
    yield pg
    context.close()
    assert not elsewhere, f"the console asked other hosts: {elsewhere}"
    assert not errors, f"script errors: {errors}"


def login(page, data_dir: Path, project: str = "demo", as_project: str | None = None) -> None:
    """Log in with a fresh local token of ``project`` (typed into the form as ``as_project``), by keyboard."""
    token = _cli(data_dir, "token", "create", "--project", project)
    page.get_by_label("Project id").focus()
    page.keyboard.type(as_project or project)
    page.keyboard.press("Tab")
    page.keyboard.type(token)
    page.keyboard.press("Enter")


def shot(page, name: str, **kw) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, **kw)


def row(page, text: str):
    return page.locator("tr", has_text=text)


def test_login_shows_every_protectability_answer(page, server):
    base, data = server
    login(page, data)
    page.get_by_text(re.compile(r"checked 11 servers in one request")).wait_for()
    for name, (code, words) in REFUSED.items():
        cell = row(page, name).locator("td[data-label='Can be backed up']")
        assert cell.inner_text().startswith("No:"), name
        assert code in cell.inner_text() and words in cell.inner_text(), (name, cell.inner_text())
        assert row(page, name).get_by_role("button", name=re.compile("Back up")).is_disabled()
    for name in ALLOWED:
        assert row(page, name).locator("td[data-label='Can be backed up']").inner_text() == "Yes", name
    assert "secret-1" not in page.locator("main").inner_text()  # another project's server is not listed
    shot(page, "servers")

    # the two answers no listed server gives: another project's server, and a volume
    other = page.get_by_role("form", name="Check another resource")
    other.get_by_label("Resource id").fill(SECRET_1)
    other.get_by_role("button", name="Check").click()
    other.get_by_text("CSBS.6000").wait_for()
    assert "server do not exist" in other.inner_text()
    other.get_by_label("Resource id").fill(SPARE_DISK)
    other.get_by_label("Resource type").fill("OS::Cinder::Volume")
    other.get_by_role("button", name="Check").click()
    other.get_by_text("CSBS.6003").wait_for()
    assert "type (OS::Cinder::Volume) is not support protection" in other.inner_text()

    # phone-sized window: the table stacks, nothing is wider than the screen
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.get_by_text(re.compile(r"checked 11 servers")).wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "phone-servers", clip={"x": 0, "y": 0, "width": 390, "height": 844})

    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Log in").wait_for()
    assert page.evaluate("sessionStorage.length") == 0


def test_policy_backup_restore_round_trip(page, server):
    base, data = server
    login(page, data)
    page.get_by_text(re.compile(r"checked \d+ servers")).wait_for()

    # a policy from days and times, shown as its RRULE, with web-1 bound
    page.get_by_role("link", name="Policies").click()
    page.get_by_role("link", name="New policy").click()
    page.get_by_label("Name", exact=True).fill("nightly")
    page.get_by_label("Description").fill("web tier")
    for day in ("Sat", "Sun"):
        page.get_by_label(day, exact=True).uncheck()
    page.get_by_label("Times").fill("01:30, 13:30")
    page.get_by_label("Times").dispatch_event("input")
    rrule = page.locator("#rrule").inner_text()
    assert "RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=1,13;BYMINUTE=30" in rrule, rrule
    assert "runs at 01:30, 13:30 UTC" in rrule
    page.get_by_label("Backups to keep").fill("3")
    page.get_by_label("web-1").check()
    shot(page, "policy")
    page.get_by_label("Name", exact=True).fill("night ly")  # the API judges names: a space is refused
    page.get_by_role("button", name="Create").click()
    page.get_by_role("alert").filter(has_text="CSBS.9001").wait_for()
    page.get_by_label("Name", exact=True).fill("nightly")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Policy nightly created.").wait_for()
    policy_row = row(page, "nightly")
    assert "keep 3 backups" in policy_row.inner_text() and "web-1" in policy_row.inner_text()

    # the policy as the API sees it, asked with a token of the project
    token = _cli(data, "token", "create", "--project", "demo")
    policies = httpx.get(f"{base}/v1/demo/policies", headers={"X-Auth-Token": token}).json()["policies"]
    (policy,) = [p for p in policies if p["name"] == "nightly"]
    op = policy["scheduled_operations"][0]
    assert "BYDAY=MO,TU,WE,TH,FR;BYHOUR=1,13;BYMINUTE=30" in op["trigger"]["properties"]["pattern"]
    assert op["operation_definition"]["max_backups"] == 3 and [r["id"] for r in policy["resources"]] == [WEB_1]

    # disable, enable, then run now: the backup shows up and reaches available
    policy_row.get_by_role("button", name="Disable").click()
    page.get_by_text("Policy nightly disabled.").wait_for()
    row(page, "nightly").get_by_role("button", name="Enable").click()
    page.get_by_text("Policy nightly enabled.").wait_for()
    for v in WEB_1_DISKS:  # some data on web-1's disks, the same 4 MiB twice on each
        block = os.urandom(4 << 20)
        _cli(data, "sandbox", "write", v, stdin=block + block)
    hashes = {v: _cli(data, "sandbox", "hash", v) for v in WEB_1_DISKS}
    row(page, "nightly").get_by_role("button", name="Run now").click()
    page.get_by_text("Policy nightly is running").wait_for()
    backup_row = page.locator("tbody tr", has_text="web-1").first
    backup_row.locator(".badge.available").wait_for(timeout=120_000)
    shot(page, "backups")
    backup_row.get_by_role("link").first.click()
    page.get_by_role("heading", name="Disks").wait_for()
    facts = page.locator("dl.facts").inner_text()
    assert "available" in facts and "on request" in facts and "Space saving" in facts
    assert page.locator("td[data-label='Disk size']").count() == 2
    shot(page, "backup-detail")

    # change web-1's data, then restore the backup onto it through the wizard
    _cli(data, "sandbox", "write", WEB_1_DISKS[1], "--offset", "4096", stdin=os.urandom(1 << 20))
    assert _cli(data, "sandbox", "hash", WEB_1_DISKS[1]) != hashes[WEB_1_DISKS[1]]
    page.get_by_role("link", name="Restore…").click()
    page.get_by_label("2. Target server").select_option(WEB_1)
    page.get_by_label("Power the server on afterwards").uncheck()
    assert page.get_by_role("button", name="Restore", exact=True).is_disabled()  # not before the check
    page.get_by_role("button", name="Check").click()
    page.get_by_text("Can be restored.").wait_for()
    page.get_by_role("button", name="Restore", exact=True).click()
    page.locator("#restore-status .badge.success").wait_for(timeout=120_000)
    assert "100 %" in page.locator("#restore-status").inner_text()
    shot(page, "restore")
    assert {v: _cli(data, "sandbox", "hash", v) for v in WEB_1_DISKS} == hashes

    # a restore the API refuses (web-1's two disks onto db-1's one) shows check_restorable's reason and cannot run
    page.goto(page.url)
    page.get_by_label("2. Target server").select_option(DB_1)
    page.get_by_role("button", name="Check").click()
    page.get_by_text("Cannot be restored").wait_for()
    assert re.search(r"CSBS\.\d{4}", page.get_by_role("status").filter(has_text="Cannot").inner_text())
    assert page.get_by_role("button", name="Restore", exact=True).is_disabled()


def test_failure_reason_and_charts(page, server):
    base, data = server
    # db-1's disk turns unreadable (its volume file becomes a directory): the backup fails in the worker
    volume = data / "sandbox" / "volumes" / f"{DB_1_SYS}.img"
    volume.unlink()
    volume.mkdir()
    login(page, data)
    page.get_by_text(re.compile(r"checked \d+ servers")).wait_for()
    row(page, "db-1").get_by_role("button", name="Back up db-1 now").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Backup name").fill("db-before-upgrade")
    dialog.get_by_label("Description").fill("before the upgrade")
    dialog.get_by_role("button", name="Back up").click()
    page.get_by_text(re.compile("Backup of db-1 started")).wait_for()
    page.locator("tbody tr", has_text="db-before-upgrade").locator(".badge.error").wait_for(timeout=120_000)

    page.get_by_role("link", name="Project").click()
    failures = page.locator("section", has=page.get_by_role("heading", name="Failures"))
    failures.get_by_text("db-before-upgrade").wait_for()
    assert "Is a directory" in failures.locator("tr", has_text="db-before-upgrade").inner_text()
    assert page.locator("svg.chart").count() == 3
    assert page.locator("svg.chart rect").count() >= 2  # an available and an error bar
    quotas = page.locator("section", has=page.get_by_role("heading", name="Quotas")).inner_text()
    assert "Backups" in quotas and "Backup capacity" in quotas
    shot(page, "project")

    # filters: status error finds exactly that backup
    page.get_by_role("link", name="Backups").click()
    page.get_by_label("Status").select_option("error")
    page.get_by_role("button", name="Apply").click()
    page.get_by_text("1–1 of 1").wait_for()
    assert page.locator("tbody tr").count() == 1


def test_another_project_sees_nothing(page, server):
    base, data = server
    login(page, data, project="other-project")
    page.get_by_text(re.compile(r"checked 1 servers")).wait_for()
    main = page.locator("main")
    assert "secret-1" in main.inner_text()
    for name in ("web-1", "db-1", *REFUSED):
        assert name not in main.inner_text()
    page.get_by_role("link", name="Backups").click()
    page.get_by_text("No backup matches.").wait_for()
    page.get_by_role("link", name="Policies").click()
    page.get_by_text("No policy yet.").wait_for()
    page.get_by_role("link", name="Project").click()
    page.get_by_text("No failed backup.").wait_for()
    assert "db-before-upgrade" not in main.inner_text() and "nightly" not in main.inner_text()
    # a demo backup's page, opened by URL, is not found for this project
    token = _cli(data, "token", "create", "--project", "demo")
    items = httpx.get(f"{base}/v1/demo/checkpoint_items", headers={"X-Auth-Token": token}).json()["checkpoint_items"]
    assert items
    page.goto(f"{base}/console/#/backups/{items[0]['id']}")
    page.get_by_text("CSBS.3001").wait_for()
    page.get_by_role("button", name="Log out").click()

    # an other-project token typed with project demo: refused at login
    login(page, data, project="other-project", as_project="demo")
    page.get_by_text("APIGW.0302").wait_for()
    assert page.get_by_role("button", name="Log in").is_visible()


@pytest.mark.keystone
def test_keystone_login_by_user_name_and_password(browser, settings):
    """In Keystone mode the console asks for user name, password and project, and gets the token through
    ``POST /opencsbs/v1/auth/tokens``; a wrong password is refused with the gateway's code."""
    import threading

    import uvicorn
    from identity_support import keystone_available, keystone_env, keystone_settings

    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    env = keystone_env()
    require_component(keystone_available(env), "Keystone not running (scripts/services/keystone.sh start)")
    keystone_settings(settings, env)
    rt = build_runtime(settings, migrate=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    context = browser.new_context()
    try:
        while not server.started:
            assert thread.is_alive()
            time.sleep(0.05)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"http://127.0.0.1:{port}/console/")
        page.get_by_label("User name").fill("csbs-member")
        page.get_by_label("Password").fill("wrong")
        page.get_by_label("Project (name or id)").fill("csbs-alpha")
        page.get_by_role("button", name="Log in").click()
        page.get_by_text("APIGW.0301").wait_for()
        page.get_by_label("Password").fill(env["OPENCSBS_TEST_KEYSTONE_PASSWORD"])
        page.get_by_role("button", name="Log in").click()
        page.get_by_text("project csbs-alpha · csbs-member").wait_for()
        page.get_by_role("heading", name="Servers").wait_for()
        assert env["OPENCSBS_TEST_KEYSTONE_PASSWORD"] not in page.evaluate("JSON.stringify(sessionStorage)")
        page.get_by_role("button", name="Log out").click()
        page.get_by_label("User name").wait_for()
    finally:
        context.close()
        server.should_exit = True
        thread.join(timeout=10)
        rt.close()
