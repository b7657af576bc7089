"""The dashboard in a real browser (headless Chromium through Playwright) against the
live local stack: paste a key, watch counts change as tasks run, open a task's
history, redrive a dead letter, cancel a waiting task.  Screenshots go to
test-artifacts/.

Chromium is Debian's (/usr/bin/chromium); ``make test`` installs it when missing.
Without it this test fails (it does not skip): the dashboard is a feature."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import query, wait_for
from tests.stack import ROOT, Stack

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = os.environ.get("TASKLANE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        pytest.fail(
            "Chromium is not installed, so the dashboard cannot be tested in a browser. "
            "Install it with `apt-get install -y chromium` (make test does this when run as root), "
            "or point TASKLANE_CHROMIUM at a Chromium binary."
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, artifacts: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield pg
    context.close()
    # 401 from the wrong-key check is expected in the console; nothing else is.
    unexpected = [e for e in errors if "401" not in e]
    assert not unexpected, unexpected


def tenant_key(stack: Stack) -> tuple[str, str]:
    tenant = f"ops-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "TASKLANE_DATABASE_URL": stack.database_url}
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "keys", "create", "--tenant", tenant, "--rate-limit", "100000/min"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return tenant, done.stdout.strip()


def tenant_counts(stack: Stack, tenant: str) -> dict[str, int]:
    rows = query(stack.database_url, "SELECT status, count(*) FROM tasks WHERE tenant = %s GROUP BY status", tenant)
    return {status: int(n) for status, n in rows}


def text_of(page: Any, testid: str) -> str:
    return str(page.get_by_test_id(testid).inner_text()).strip()


def wait_text(page: Any, testid: str, expected: str, timeout: float = 30) -> None:
    def shown() -> bool:
        if text_of(page, testid) == expected:
            return True
        page.get_by_test_id("refresh").click()
        page.wait_for_timeout(300)
        return text_of(page, testid) == expected

    wait_for(
        shown, timeout=timeout, interval=0.2, message=f"{testid} to show {expected!r} (shows {text_of(page, testid)!r})"
    )


def test_dashboard_shows_live_numbers_and_redrives_a_dead_letter(stack: Stack, page: Any, artifacts: Path) -> None:
    tenant, key = tenant_key(stack)

    def submit(name: str, payload: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        r = stack.post("/api/v1/tasks", {"name": name, "payload": payload or {}, **fields}, key=key)
        assert r.status_code == 201, r.text
        return dict(r.json())

    page.goto(stack.base_url + "/dashboard")
    page.get_by_test_id("api-key").fill("tl_" + "x" * 43)
    page.get_by_test_id("connect").click()
    page.get_by_test_id("login-error").filter(has_text="refused").wait_for()
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("connect").click()
    page.get_by_test_id("kpi-submitted").wait_for()
    assert text_of(page, "tenant") == f"tenant {tenant}"
    assert text_of(page, "kpi-submitted") == "0"
    # The name filter lists every task type (GET /api/v1/task-types) before any task ran.
    options = page.eval_on_selector_all("[data-testid=filter-name] option", "os => os.map(o => o.value)")
    assert {"noop", "sleep", "send-sms", "generate-pdf"} <= set(options), options
    assert key not in page.url
    assert page.evaluate("sessionStorage.getItem('tasklane.apiKey')") == key

    for i in range(6):
        submit("noop", {"i": i}, priority="high" if i < 2 else "low")
    # The dead letter is a batch of its own: its detail shows the batch.
    in_batch = {"tasks": [{"name": "fail", "payload": {"permanent": True, "message": "card declined"}}], "batch": {}}
    r = stack.post("/api/v1/tasks/batch", in_batch, key=key)
    assert r.status_code == 201 and r.json()["batch_id"], r.text
    dead = r.json()["results"][0]["task"]
    submit("fail", {"times": 1})
    later = [submit("noop", {"later": i}, priority="critical", delay_seconds=3600) for i in range(2)]
    wait_for(
        lambda: tenant_counts(stack, tenant).get("COMPLETED") == 7 and tenant_counts(stack, tenant).get("FAILED") == 1,
        timeout=30,
        message="the tasks to finish",
    )
    # Only now the long one: a batch records its outcomes together, so quick tasks
    # claimed in one batch with a 60 s sleep would wait for it.
    running = submit("sleep", {"seconds": 60}, timeout_seconds=120)
    wait_for(lambda: tenant_counts(stack, tenant).get("PROCESSING") == 1, timeout=30, message="the sleep to start")

    wait_text(page, "kpi-completed", "7")
    counts = tenant_counts(stack, tenant)
    assert text_of(page, "kpi-submitted") == str(sum(counts.values())) == "11"
    assert text_of(page, "kpi-failed") == "1"
    assert text_of(page, "kpi-dead") == "1"
    assert text_of(page, "kpi-processing") == "1"
    assert text_of(page, "kpi-queue") == "2"
    assert text_of(page, "delayed-critical") == "2"
    assert text_of(page, "running-normal") == "1"
    assert text_of(page, "name-noop-completed") == "6"
    assert text_of(page, "name-fail-dead_letters") == "1"
    stats = stack.get("/api/v1/stats", key=key).json()
    assert stats["totals"]["completed"] == 7 and stats["totals"]["dead_letters"] == 1
    assert page.locator("#chart svg rect[fill='#16a34a']").count() >= 1
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)

    # A task's detail: its history and its errors.
    page.locator(f"[data-testid=dlq-table] tr[data-task-id='{dead['id']}']").click()
    page.get_by_test_id("detail").wait_for()
    assert text_of(page, "detail-id") == dead["id"]
    assert "card declined" in text_of(page, "detail-errors")
    page.get_by_test_id("detail-batch").filter(has_text="COMPLETED · 1/1 final (100%)").wait_for()
    assert "1 failed" in text_of(page, "detail-batch")
    # ... and the batches table lists it.
    assert text_of(page, f"batch-done-{dead['batch_id']}") == "1/1"
    history = text_of(page, "detail-events")
    assert re.search(r"QUEUED\s*→\s*PROCESSING", history) and re.search(r"PROCESSING\s*→\s*FAILED", history)
    page.screenshot(path=str(artifacts / "dashboard-task-detail.png"))
    page.get_by_test_id("detail-close").click()

    # Redrive the dead letter from the dead-letter table.
    page.get_by_test_id(f"redrive-{dead['id']}").click()
    page.get_by_test_id("toast").filter(has_text="Redriven").wait_for()
    redriven = query(
        stack.database_url,
        "SELECT count(*) FROM task_events WHERE task_id = %s AND from_status = 'FAILED' AND to_status = 'QUEUED'",
        dead["id"],
    )[0][0]
    assert redriven == 1
    # It fails again (permanently), so it is back in the dead-letter queue with two runs.
    wait_for(
        lambda: (
            query(stack.database_url, "SELECT attempts, status FROM tasks WHERE id = %s", dead["id"])[0]
            == (1, "FAILED")
            and query(
                stack.database_url,
                "SELECT count(*) FROM task_events WHERE task_id = %s AND to_status = 'FAILED'",
                dead["id"],
            )[0][0]
            == 2
        ),
        timeout=30,
        message="the redriven task to run again",
    )

    # Filters: only COMPLETED rows.
    page.get_by_test_id("filter-status").select_option("COMPLETED")
    rows = "[...document.querySelectorAll('[data-testid=tasks-table] tbody tr')]"
    page.wait_for_function(f"() => {rows}.length === 7 && {rows}.every(r => r.dataset.status === 'COMPLETED')")
    page.get_by_test_id("filter-status").select_option("")

    # Cancel a waiting task and the running one from the task table.
    page.get_by_test_id(f"cancel-{later[0]['id']}").click()
    wait_for(lambda: stack.get(f"/api/v1/tasks/{later[0]['id']}", key=key).json()["status"] == "CANCELLED")
    page.get_by_test_id(f"cancel-{running['id']}").click()
    wait_for(lambda: stack.get(f"/api/v1/tasks/{running['id']}", key=key).json()["status"] == "CANCELLED", timeout=30)
    wait_text(page, "kpi-processing", "0")
    assert text_of(page, "kpi-queue") == "1"

    # Forgetting the key returns to the login card.
    page.get_by_test_id("signout").click()
    page.get_by_test_id("api-key").wait_for()
    assert page.evaluate("sessionStorage.getItem('tasklane.apiKey')") is None


def test_dashboard_pauses_and_resumes_a_task_type_and_cancels_by_filter(
    stack: Stack, page: Any, artifacts: Path
) -> None:
    tenant, key = tenant_key(stack)

    def submit(name: str, payload: dict[str, Any], **fields: Any) -> str:
        r = stack.post("/api/v1/tasks", {"name": name, "payload": payload, **fields}, key=key)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    submit("sleep", {"seconds": 0})
    page.goto(stack.base_url + "/dashboard")
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("connect").click()
    wait_text(page, "name-sleep-completed", "1")

    page.get_by_test_id("pause-sleep").click()
    page.get_by_test_id("toast").filter(has_text="Paused sleep").wait_for()
    page.get_by_test_id("paused-sleep").wait_for()
    held = [submit("sleep", {"seconds": 0}) for _ in range(3)]
    later = [submit("noop", {}, delay_seconds=3600) for _ in range(2)]
    wait_text(page, "name-sleep-queue_size", "3")
    assert tenant_counts(stack, tenant) == {"COMPLETED": 1, "QUEUED": 3, "PENDING": 2}
    page.screenshot(path=str(artifacts / "dashboard-paused.png"), full_page=True)

    # Cancel by the task filters (a confirm dialog first).
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("filter-name").select_option("noop")
    page.get_by_test_id("cancel-matching").click()
    page.get_by_test_id("toast").filter(has_text="Cancelled 2").wait_for()
    assert {stack.get(f"/api/v1/tasks/{i}", key=key).json()["status"] for i in later} == {"CANCELLED"}
    page.get_by_test_id("filter-name").select_option("")

    page.get_by_test_id("resume-sleep").click()
    page.get_by_test_id("toast").filter(has_text="Resumed sleep: 3").wait_for()
    wait_text(page, "name-sleep-completed", "4")
    assert {stack.get(f"/api/v1/tasks/{i}", key=key).json()["status"] for i in held} == {"COMPLETED"}
    assert page.get_by_test_id("paused-sleep").count() == 0


def test_dashboard_assets_are_served_by_the_app_with_their_types(stack: Stack) -> None:
    import requests

    for path, kind in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
        ("/dashboard/favicon.svg", "image/svg+xml"),
    ]:
        r = requests.get(stack.base_url + path, timeout=10)
        assert r.status_code == 200, path
        assert r.headers["Content-Type"].startswith(kind), (path, r.headers["Content-Type"])
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert "http://" not in r.text.replace("http://www.w3.org", "") and "https://" not in r.text, path
