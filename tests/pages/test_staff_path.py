"""The staff path in a real browser, on footage a real browser recorded: a
bystander records about 10 s at /record and the browser is killed; then a
lawyer logs in to the console, finds that recording in the live list,
plays and seeks it, asks for a signed copy; a custodian approves; the
lawyer downloads the bundle, and `witness-verify` passes on it. Every page
is saved as a screenshot at phone and laptop widths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from ..browser import LAPTOP, PHONE, screenshot
from ..support import ServerProcess, Staff

VERIFY_SCRIPT = Path(sys.executable).with_name("witness-verify")

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    process = ServerProcess(tmp_path / "server", idle_seconds=3).start()
    yield process
    process.stop()


def record_in_browser(chromium, server: ServerProcess, seconds: float) -> str:
    """Record at /record until about `seconds` are safe on the server, then
    kill the browser without stopping. Returns the recording id."""
    page = chromium.new_page(viewport=PHONE)
    page.goto(server.url + "/record")
    button = page.get_by_role("button", name="Start recording")
    button.click()
    reference = page.locator("#reference-id")
    reference.wait_for(state="visible")
    recording_id = reference.inner_text().strip()
    page.wait_for_function("n => Number(document.querySelector('#safe').textContent) >= n", arg=seconds,
                           timeout=seconds * 1000 + 30_000)
    chromium.kill()
    return recording_id


def log_in(browser, server: ServerProcess, who: Staff, *, start: str = "/console/"):
    page = browser.new_page(viewport=LAPTOP)
    page.goto(server.url + start)
    assert "/console/login" in page.url  # no session yet: the console asks to log in first
    page.get_by_label("Username").fill(who.username)
    page.get_by_label("Password").fill(who.password)
    page.get_by_role("button", name="Log in").click()
    return page


def at_phone_width(page, name: str) -> None:
    """Screenshot the page the user is on at laptop width, then the same page
    in the same session at phone width."""
    screenshot(page, name)
    phone = page.context.browser.new_context(viewport=PHONE, storage_state=page.context.storage_state())
    small = phone.new_page()
    small.goto(page.url)
    screenshot(small, name)
    phone.close()


def test_from_a_killed_browser_recording_to_a_verified_copy(chromium, server, tmp_path):
    recording_id = record_in_browser(chromium, server, seconds=10)
    chromium.close()

    from ..browser import Chromium

    browser = Chromium()
    try:
        lawyer = Staff(server, "lena", "lawyer")
        custodian = Staff(server, "cato", "custodian")

        # The lawyer logs in and finds the recording in the list, which shows
        # it finalized as interrupted once the server gave up waiting.
        page = log_in(browser.browser, server, lawyer)
        page.wait_for_url(lambda url: urlsplit(url).path == "/console/recordings")
        row = page.locator("tbody tr", has=page.locator(f"a[title='{recording_id}']"))
        row.get_by_text("interrupted").wait_for(timeout=30_000)  # the list updates by itself
        assert row.get_by_text("none", exact=True).is_visible()  # no gaps
        at_phone_width(page, "console-recordings")

        # Play and seek: the player fetches the footage with Range requests.
        row.get_by_role("link").click()
        page.wait_for_url(f"**/console/recordings/{recording_id}")
        video = page.locator("video")
        page.wait_for_function("v => v.readyState >= 1 && isFinite(v.duration)", arg=video.element_handle())
        duration = video.evaluate("v => v.duration")
        assert duration >= 8, f"the player sees only {duration} s"
        video.evaluate("v => { v.muted = true; return v.play(); }")
        page.wait_for_function("v => v.currentTime > 0.5", arg=video.element_handle(), timeout=20_000)
        target = round(duration - 3, 1)
        video.evaluate("(v, t) => new Promise(done => { v.addEventListener('seeked', done, {once: true}); "
                       "v.currentTime = t; })", target)
        page.wait_for_function("v => v.readyState >= 2", arg=video.element_handle())
        assert abs(video.evaluate("v => v.currentTime") - target) < 1.0
        assert video.evaluate("v => v.getVideoPlaybackQuality().totalVideoFrames") > 0
        entries = requests.get(server.url + "/v1/audit", headers=custodian.auth,
                               params={"recording_id": recording_id, "action": "footage.streamed"}).json()["entries"]
        assert any(entry["actor"] == "staff:lena" and entry["detail"]["partial"] for entry in entries), entries
        at_phone_width(page, "console-recording")

        # Ask for a signed copy.
        page.get_by_label("Case reference").fill("People v. Example, 26-CR-0117")
        page.get_by_label("Purpose").fill("Disclosure to the defence.")
        page.get_by_role("button", name="Ask for a signed copy").click()
        page.wait_for_url("**/console/copies/*")
        assert page.get_by_text("pending", exact=True).is_visible()
        copy_url = page.url
        at_phone_width(page, "console-copy-pending")

        # A custodian approves it from the list of requests.
        decider = log_in(browser.browser, server, custodian, start="/console/copies")
        decider.wait_for_url(lambda url: urlsplit(url).path == "/console/copies")
        at_phone_width(decider, "console-copies")
        decider.get_by_role("link", name="People v. Example, 26-CR-0117").click()
        decider.get_by_label("Note").fill("Subpoena received.")
        decider.get_by_role("button", name="Approve and build the copy").click()
        decider.get_by_text("The bundle is ready to download.").wait_for(timeout=60_000)  # the page reloads itself
        at_phone_width(decider, "console-copy-ready")

        # The lawyer downloads it; witness-verify passes on it, offline.
        page.goto(copy_url)
        with page.expect_download() as download:
            page.get_by_role("link", name="Download").click()
        bundle = tmp_path / download.value.suggested_filename
        download.value.save_as(bundle)
        checked = subprocess.run([str(VERIFY_SCRIPT), str(bundle)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "All 9 checks passed" in checked.stdout
    finally:
        browser.close()
