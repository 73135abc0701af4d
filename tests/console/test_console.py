"""The web console as a user sees it, in a real headless Chromium on a real server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# `ATTUNE_CONSOLE_SCREENSHOTS=docs/img pytest tests/console` refreshes the pictures in docs/console.md.
SCREENSHOTS = os.environ.get("ATTUNE_CONSOLE_SCREENSHOTS")
TIMEOUT = 20_000  # ms: how long a page may take to show what a step waits for

DECIDE = """
parameters:
  environment: {type: string, enum: [dev, production], default: dev}
  replicas: {type: integer, default: 1}
tasks:
  - name: check
    action: core.noop
    decision:
      - when: "{{ parameters.environment == 'production' }}"
        next: careful
      - default: quick
  - name: careful
    action: core.echo
    input: {step: careful}
  - name: quick
    action: core.echo
    input: {step: quick, replicas: "{{ parameters.replicas }}"}
output_map:
  replicas: "{{ parameters.replicas }}"
"""

SLOW = """
tasks:
  - name: first
    action: core.sleep
    input: {seconds: 0.3}
    next: [{do: second}]
  - name: second
    action: core.sleep
    input: {seconds: 0.3}
    next: [{do: third}]
  - name: third
    action: core.echo
    input: {step: third}
"""

APPROVAL = """
tasks:
  - name: approve
    action: core.inquiry
    input:
      prompt: "Ship it?"
      schema:
        type: object
        properties:
          approved: {type: boolean}
          reason: {type: string}
          copies: {type: integer}
        required: [approved, copies]
    next:
      - when: "{{ task.approve.result.approved }}"
        do: ship
  - name: ship
    action: core.echo
    input: {copies: "{{ task.approve.result.copies }}"}
output_map:
  copies: "{{ task.approve.result.copies }}"
"""


async def shot(page: Any, name: str) -> None:
    """Keep a screenshot of a main page for docs/console.md, when asked to."""
    if SCREENSHOTS:  # Playwright creates the folder
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"console-{name}.png"), full_page=True)


async def test_execute_from_the_form_and_watch_the_graph_succeed(
    browser: Any, console: Any, workflow: Any
) -> None:
    ref = workflow("decide", DECIDE)
    url = await console()
    page = await browser.new_page(viewport={"width": 1200, "height": 800})
    await page.goto(f"{url}/#/workflows")
    await page.click(f"a[href='#/workflows/{ref}']")
    await page.wait_for_selector("form#execute", timeout=TIMEOUT)
    assert "core.noop" in await page.inner_text("#source")
    await page.select_option("#execute-environment", label="dev")
    await page.fill("#execute-replicas", "3")
    await shot(page, "workflow")
    await page.click("form#execute button[type=submit]")
    # The form opens the new execution, whose graph follows it live to the end.
    await page.wait_for_selector("h1[data-status='succeeded']", timeout=TIMEOUT)
    await page.wait_for_selector("#graph g.node[data-task='quick'][data-status='succeeded']", timeout=TIMEOUT)
    assert await page.get_attribute("#graph g.node[data-task='careful']", "data-status") == "none"
    taken = await page.get_attribute("#graph g.edge[data-from='check'][data-to='quick']", "data-taken")
    untaken = await page.get_attribute("#graph g.edge[data-from='check'][data-to='careful']", "data-taken")
    assert (taken, untaken) == ("true", "false")
    assert '"replicas": 3' in await page.inner_text("#output")
    assert await page.inner_text("#tasks tr[data-task='quick'] td:nth-child(3)") == "1"
    await shot(page, "execution")
    await page.goto(f"{url}/#/executions?status=succeeded")
    await page.wait_for_selector("#executions tbody tr[data-id]", timeout=TIMEOUT)
    await shot(page, "executions")


async def test_a_wrong_parameter_is_refused_in_the_form(browser: Any, console: Any, workflow: Any) -> None:
    ref = workflow("decide", DECIDE)
    url = await console()
    page = await browser.new_page()
    await page.goto(f"{url}/#/workflows/{ref}")
    await page.wait_for_selector("form#execute", timeout=TIMEOUT)
    await page.fill("#execute-replicas", "1.5")
    await page.click("form#execute button[type=submit]")
    refusal = "form#execute [role=alert]:has-text('replicas must be an integer')"
    await page.wait_for_selector(refusal, timeout=TIMEOUT)
    assert page.url.endswith(f"#/workflows/{ref}")


async def test_pause_and_resume_from_the_execution_page(
    browser: Any, console: Any, workflow: Any
) -> None:
    ref = workflow("slow", SLOW)
    url = await console()
    page = await browser.new_page()
    await page.goto(f"{url}/#/workflows/{ref}")
    await page.click("form#execute button[type=submit]")
    await page.wait_for_selector("h1[data-status='running']", timeout=TIMEOUT)
    await page.click("button[data-action=pause]")
    # Pausing lets the running task finish and starts nothing new (what is next waits, staged).
    await page.wait_for_selector("h1[data-status='paused']", timeout=TIMEOUT)
    third = await page.get_attribute("#graph g.node[data-task='third']", "data-status")
    assert third in ("none", "scheduled")
    assert await page.is_disabled("button[data-action=pause]")
    await page.click("button[data-action=resume]")
    await page.wait_for_selector("h1[data-status='succeeded']", timeout=TIMEOUT)
    await page.wait_for_selector("#graph g.node[data-task='third'][data-status='succeeded']", timeout=TIMEOUT)
    assert await page.is_enabled("button[data-action=rerun]")


async def test_answer_an_inquiry_through_its_generated_form(
    browser: Any, console: Any, workflow: Any
) -> None:
    ref = workflow("approval", APPROVAL)
    url = await console()
    page = await browser.new_page(viewport={"width": 1200, "height": 800})
    await page.goto(f"{url}/#/workflows/{ref}")
    await page.click("form#execute button[type=submit]")
    await page.wait_for_selector("h1[data-status]", timeout=TIMEOUT)
    execution_url = page.url
    await page.goto(f"{url}/#/inquiries")
    form = page.locator(".inquiry form")
    await form.wait_for(timeout=TIMEOUT)
    assert "Ship it?" in await page.inner_text(".inquiry")
    # The schema made a checkbox, a text field and a number field; `copies` is required.
    await form.locator("input[name=approved]").check()
    await form.locator("button[type=submit]").click()
    await page.wait_for_selector(".inquiry [role=alert]:has-text('copies is required')", timeout=TIMEOUT)
    await form.locator("input[name=copies]").fill("2")
    await form.locator("input[name=reason]").fill("tests are green")
    await shot(page, "inquiry")
    await form.locator("button[type=submit]").click()
    await page.wait_for_selector("text=Nothing is waiting for an answer.", timeout=TIMEOUT)
    await page.goto(execution_url)
    await page.wait_for_selector("h1[data-status='succeeded']", timeout=TIMEOUT)
    assert '"copies": 2' in await page.inner_text("#output")


async def test_without_a_token_the_console_asks_for_one(
    browser: Any, console: Any, workflow: Any, admin_token: str
) -> None:
    workflow("decide", DECIDE)
    url = await console(tokens=True)
    page = await browser.new_page()
    refused: list[int] = []
    page.on("response", lambda r: refused.append(r.status) if "/api/" in r.url and r.status == 401 else None)
    await page.goto(f"{url}/#/executions")
    await page.wait_for_selector("form#login", timeout=TIMEOUT)
    assert 401 in refused
    await page.fill("#token", "not-the-token")
    await page.click("form#login button[type=submit]")
    await page.wait_for_selector("form#login [role=alert]:has-text('not accepted')", timeout=TIMEOUT)
    await page.fill("#token", admin_token)
    await page.click("form#login button[type=submit]")
    await page.wait_for_selector("#executions", timeout=TIMEOUT)
    assert "#/executions" in page.url
