"""The dashboard in headless Chromium (Debian's, driven by Playwright): sign in with a key, then
watch the numbers change as traffic goes through. Saves a screenshot in the test's directory."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from noa.build import gateway
from noa.config import parse_config
from noa.http.app import create_app
from noa.testing.server import ServerThread

KEY = "dashboard-master-key"


@pytest.fixture
def page() -> Iterator[Page]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: run the suite through ./scripts/test.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def number(page: Page, element: str) -> float:
    return float(page.inner_text(f"#{element}").replace(",", "").rstrip("%") or "nan")


def test_the_dashboard_signs_in_and_shows_live_numbers(
    page: Page, upstream_env: dict[str, str], tmp_path: Path
) -> None:
    config = parse_config({"providers": {"openai": {"kind": "openai"}}})
    parts = gateway.inprocess(config, {**upstream_env, "NOA_MASTER_KEY": KEY})
    service, access, metrics = parts.service, parts.access, parts.metrics  # as the Gateway's
    app = create_app(service, auth=access.auth, admin=access.admin, metrics=metrics)
    server = ServerThread(app).start()
    try:
        page.goto(f"{server.base_url}/dashboard?interval=300")
        page.wait_for_selector("#login:not([hidden])")
        page.fill("#key", "wrong-key")
        page.click("#signin")
        page.wait_for_function("document.getElementById('error').textContent.length > 0")
        assert page.is_visible("#login") and not page.is_visible("#board")

        page.fill("#key", KEY)
        page.click("#signin")
        page.wait_for_selector("#board:not([hidden])")
        page.wait_for_function("document.getElementById('requests-total').textContent !== '-'")
        before = number(page, "requests-total")

        body = {"model": "openai/gpt-dash", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            auth = {"authorization": f"Bearer {KEY}"}
            for _ in range(30):
                assert client.post("/v1/chat/completions", json=body, headers=auth).is_success
            assert (
                client.post("/v1/chat/completions", json={"model": 1}, headers=auth).status_code
                == 400
            )

        page.wait_for_function(
            f"Number(document.getElementById('requests-total').textContent.replace(/,/g, ''))"
            f" >= {before + 31}",
            timeout=20_000,
        )
        assert number(page, "requests-total") == before + 31
        assert number(page, "error-rate") > 0
        assert page.inner_text("#p50").endswith("ms")
        assert "openai/gpt-dash\topenai\t30" in page.inner_text("#models")  # model, provider, calls
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    finally:
        server.stop()
