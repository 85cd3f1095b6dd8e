"""The endpoint catalogue at `/` in a real Chromium: listed endpoints, Try buttons, no errors."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    Dialog,
    Locator,
    Page,
    expect,
)

from cloud_phoenix.app.routes import CRASH_EXIT_CODE
from tests.fixtures.browser import ARTIFACTS, WAIT_MS, PageWatch
from tests.fixtures.server import PhoenixProcess
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration


def open_catalogue(browser: Browser, url: str, watch: PageWatch) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(WAIT_MS)
    page.on("console", watch.on_console)
    page.on("pageerror", watch.on_page_error)
    page.on("request", watch.on_request)
    response = page.goto(url + "/", wait_until="load")
    assert response is not None
    assert response.status == 200
    return page


def section(page: Page, path: str) -> Locator:
    return page.locator(f'section.endpoint[data-path="{path}"]')


def press_try(page: Page, path: str) -> Locator:
    """Press Try on `path`; returns the section's result box."""
    endpoint = section(page, path)
    endpoint.get_by_role("button", name="Try").click()
    return endpoint.locator(".result")


def wait_for_status(result: Locator, status: int) -> None:
    expect(result).to_be_visible(timeout=WAIT_MS)
    expect(result.locator(".meta")).to_contain_text(f"status {status}", timeout=WAIT_MS)


def test_catalogue_lists_and_tries_endpoints(
    browser: Browser,
    phoenix_server: PhoenixProcess,
) -> None:
    watch = PageWatch()
    page = open_catalogue(browser, phoenix_server.url, watch)

    openapi_paths = list(httpx.get(phoenix_server.url + "/openapi.json", timeout=5).json()["paths"])
    listed = page.locator("section.endpoint code.path").all_inner_texts()
    assert openapi_paths, "the OpenAPI document lists no paths"
    assert sorted(listed) == sorted(openapi_paths)
    expect(page).to_have_title("Phoenix: endpoints")

    cert = press_try(page, "/generatecert")
    wait_for_status(cert, 200)
    expect(cert.locator(".meta")).to_contain_text(re.compile(r"worker \S+:\d+"))
    expect(cert.locator(".meta .ok")).to_be_visible()
    expect(cert.locator("pre.pem").first).to_contain_text("-----BEGIN CERTIFICATE-----")
    expect(cert.locator(".pem-block h3")).to_have_text(["Certificate (PEM)", "Private key (PEM)"])

    # The collector moves journal lines to the store every 0.2 s: ask again until it has.
    logs = section(page, "/logs")

    def certificate_request_shown() -> str | None:
        wait_for_status(press_try(page, "/logs"), 200)
        text = logs.locator(".result pre.json").inner_text()
        return text if '"path": "/generatecert"' in text else None

    shown = eventually(
        certificate_request_shown,
        WAIT_MS / 1000,
        what="/logs in the page to show the certificate request",
        interval=0.3,  # each look is a click and a round trip
    )
    assert '"status": 200' in shown

    def dismiss(dialog: Dialog) -> None:
        watch.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", dismiss)
    with page.expect_event("dialog", timeout=WAIT_MS):
        press_try(page, "/crash")
    # A round trip through the page: had the dismissed confirm still called /crash, it has by now.
    wait_for_status(press_try(page, "/health"), 200)
    expect(section(page, "/crash").locator(".result")).to_be_hidden()
    assert len(watch.dialogs) == 1
    assert watch.dialogs[0].startswith("confirm: This kills the worker")
    assert not [url for url in watch.requests if "/crash" in url]
    assert phoenix_server.process.poll() is None, phoenix_server.log_tail()
    crashes = httpx.get(phoenix_server.url + "/logs", params={"path": "/crash"}, timeout=5)
    assert crashes.status_code == 200
    assert crashes.json()["count"] == 0

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "catalogue.png"), full_page=True)
    assert watch.errors() == []


def test_crash_accepted_shows_no_response(
    browser: Browser,
    phoenix_server: PhoenixProcess,
) -> None:
    watch = PageWatch()
    page = open_catalogue(browser, phoenix_server.url, watch)
    page.on("dialog", lambda dialog: dialog.accept())

    result = press_try(page, "/crash")
    expect(result.locator(".meta")).to_contain_text("no response", timeout=WAIT_MS)
    expect(result.locator(".meta .bad")).to_be_visible()
    expect(result.locator(".body .note")).to_contain_text("Expected: the worker exited")
    expect(section(page, "/crash").get_by_role("button", name="Try")).to_be_enabled()
    # `phoenix serve` is one process: the crash ends it, with the crash exit code.
    assert phoenix_server.process.wait(WAIT_MS / 1000) == CRASH_EXIT_CODE

    # Chromium logs the failed fetch itself; that line is the expected outcome, not a page bug.
    network = re.compile(r"^Failed to load resource: net::ERR_\w+ .*/crash")
    unexpected = [e for e in watch.console_errors if not network.match(e)]
    assert unexpected == []
    assert watch.page_errors == []
