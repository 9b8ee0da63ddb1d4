"""The browser recorder at /record, in real chromium with the fake camera,
against a real server: a browser killed mid-recording, a normal stop, a
connection lost and found, a page closed offline and opened again, a server
that asks for an enrollment code. Screenshots of each state at phone and
laptop widths land in test-artifacts/screenshots."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from ..browser import LAPTOP, PHONE, screenshot
from ..support import ServerProcess, Staff

IDLE_SECONDS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("recorder"), idle_seconds=IDLE_SECONDS).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def observer(server):
    return Staff(server, "recorder-observer", "observer")


def wait_until(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not met within {timeout} s")


def open_recorder(chromium, server, viewport=PHONE, path="/record", context=None):
    page = (context.new_page() if context else chromium.new_page(viewport=viewport))
    page.set_default_timeout(20_000)
    page.goto(server.url + path)
    page.get_by_role("button", name="Start recording").wait_for()
    return page


def number(page, element_id: str) -> int:
    return int(page.locator(f"#{element_id}").inner_text())


def start_recording(page) -> str:
    page.get_by_role("button", name="Start recording").click()
    page.locator("body[data-recorder-state=recording]").wait_for()
    return page.locator("#reference").get_attribute("data-recording-id")


def wait_for_safe(page, seconds: int, timeout: float = 40.0) -> None:
    page.wait_for_function("n => Number(document.querySelector('#safe').textContent) >= n", arg=seconds,
                           timeout=timeout * 1000)


def status(server, observer, recording_id) -> dict:
    answer = requests.get(f"{server.url}/v1/recordings/{recording_id}/status", headers=observer.auth)
    assert answer.status_code == 200, answer.text
    return answer.json()


def held(status_body: dict) -> int:
    return sum(last - first + 1 for first, last in status_body["received"])


def both_widths(page, name: str) -> None:
    """Screenshot at the page's width, then at the other one, then back; at
    either width nothing may stick out sideways (cut off on a phone)."""
    first = page.viewport_size
    for size in (first, LAPTOP if first["width"] == PHONE["width"] else PHONE):
        page.set_viewport_size(size)
        screenshot(page, name)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} is {overflow} px wider than {size['width']} px"
    page.set_viewport_size(first)


def decoded_video(path: Path) -> tuple[int, float]:
    """(frames, seconds) of video that actually decode: every decoded frame's
    time, since ffprobe exits 0 on a truncated file and the fake camera's
    frame rate is its own."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=best_effort_timestamp_time", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, timeout=120).stdout
    times = [float(line.strip().rstrip(",")) for line in out.splitlines() if re.match(r"^[0-9.]+,?$", line.strip())]
    if len(times) < 2:
        return len(times), 0.0
    return len(times), max(times) - min(times)


def fetch_footage(server, observer, recording_id, folder: Path) -> Path:
    answer = requests.get(f"{server.url}/v1/recordings/{recording_id}/media", headers=observer.auth)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("video/mp4")  # chromium here offers MP4 (FIELD-NOTES.md)
    path = folder / "footage.mp4"
    path.write_bytes(answer.content)
    return path


def test_footage_survives_a_browser_killed_mid_recording(chromium, server, observer, tmp_path):
    """The issue's path: about 10 s recorded, then the browser dies without
    stopping, as a phone knocked out of a hand would."""
    page = open_recorder(chromium, server, viewport=PHONE)
    recording_id = start_recording(page)
    wait_for_safe(page, 10)
    chromium.kill()

    final = wait_until(lambda: (s := status(server, observer, recording_id))["state"] == "interrupted"
                       and s["manifest_version"] and s, timeout=IDLE_SECONDS + 30, what="idle finalization")
    assert final["final_index"] is None  # never stopped: no final chunk
    assert held(final) >= 10 and final["missing"] == []
    frames, seconds = decoded_video(fetch_footage(server, observer, recording_id, tmp_path))
    assert seconds >= 8.0, (frames, seconds)
    assert frames >= 8 * 5  # real frames over that time, not two stray ones


def test_a_normal_stop_completes_the_recording(chromium, server, observer, tmp_path):
    page = open_recorder(chromium, server, viewport=LAPTOP)
    page.locator("#connection[data-state=online]").wait_for()
    both_widths(page, "record-idle")
    recording_id = start_recording(page)
    wait_for_safe(page, 4)
    both_widths(page, "record-recording")
    page.get_by_role("button", name="Stop recording").click()
    page.locator("body[data-recorder-state=idle]").wait_for()
    page.get_by_text("Done. All").wait_for(timeout=30_000)

    final = wait_until(lambda: (s := status(server, observer, recording_id))["state"] == "complete" and s,
                       what="complete")
    assert final["missing"] == []
    assert final["received"] == [[0, final["final_index"]]]  # the last chunk is the final one
    assert number(page, "safe") == held(final)
    assert number(page, "waiting") == 0
    frames, seconds = decoded_video(fetch_footage(server, observer, recording_id, tmp_path))
    assert seconds >= 3.0, (frames, seconds)
    both_widths(page, "record-done")


def test_seconds_safe_never_claims_more_than_the_server_holds(chromium, server, observer):
    page = open_recorder(chromium, server, viewport=PHONE)
    recording_id = start_recording(page)
    wait_for_safe(page, 1)
    for _ in range(5):
        shown = number(page, "safe")
        assert held(status(server, observer, recording_id)) >= shown  # read after the page: never behind it
        time.sleep(0.5)
    page.get_by_role("button", name="Stop recording").click()
    page.get_by_text("Done. All").wait_for(timeout=30_000)
    assert number(page, "safe") == held(status(server, observer, recording_id))


def test_pieces_wait_offline_and_all_upload_when_back(chromium, server, observer):
    page = open_recorder(chromium, server, viewport=PHONE)
    recording_id = start_recording(page)
    wait_for_safe(page, 2)
    page.context.set_offline(True)
    page.locator("#connection[data-state=offline]").wait_for()
    page.wait_for_function("() => Number(document.querySelector('#waiting').textContent) >= 4", timeout=30_000)
    safe_offline = number(page, "safe")
    assert page.get_by_text("Offline — the video is kept on this phone").is_visible()
    assert held(status(server, observer, recording_id)) >= safe_offline
    both_widths(page, "record-offline")

    page.context.set_offline(False)
    page.locator("#connection[data-state=online]").wait_for(timeout=30_000)
    page.wait_for_function("() => Number(document.querySelector('#waiting').textContent) === 0", timeout=30_000)
    assert number(page, "safe") > safe_offline + 3
    page.get_by_role("button", name="Stop recording").click()
    page.get_by_text("Done. All").wait_for(timeout=30_000)
    final = wait_until(lambda: (s := status(server, observer, recording_id))["state"] == "complete" and s,
                       what="complete")
    assert final["missing"] == [] and final["received"] == [[0, final["final_index"]]]
    assert number(page, "safe") == held(final)


def test_a_recording_made_offline_is_sent_by_the_page_opened_again(chromium, server, observer):
    """The page was loaded once (keys and registration kept); the recording
    starts and stops with no connection; the page is closed; opened again
    with a connection, it sends the earlier recording's backlog."""
    context = chromium.browser.new_context(viewport=PHONE)
    page = open_recorder(chromium, server, context=context)
    page.locator("#connection[data-state=online]").wait_for()
    context.set_offline(True)
    recording_id = start_recording(page)
    page.wait_for_function("() => Number(document.querySelector('#waiting').textContent) >= 3", timeout=30_000)
    page.get_by_role("button", name="Stop recording").click()
    page.locator("body[data-recorder-state=idle]").wait_for()
    waiting = number(page, "waiting")
    assert number(page, "safe") == 0 and waiting >= 4
    assert requests.get(f"{server.url}/v1/recordings/{recording_id}/status",
                        headers=observer.auth).status_code == 404  # nothing reached the server
    page.close()

    context.set_offline(False)
    again = open_recorder(chromium, server, context=context)
    again.get_by_text("Done. All").wait_for(timeout=30_000)
    assert again.locator("#reference").get_attribute("data-recording-id") == recording_id
    final = wait_until(lambda: (s := status(server, observer, recording_id))["state"] == "complete" and s,
                       what="complete")
    assert final["missing"] == [] and held(final) == waiting == number(again, "safe")
    context.close()


def test_a_recording_whose_page_died_is_sent_when_the_page_opens_again(chromium, server, observer):
    """The page is closed mid-recording with pieces still on the phone (no
    stop, no final chunk): the page opened again sends them, and says the
    recording was cut off; the server finalizes it as interrupted."""
    context = chromium.browser.new_context(viewport=PHONE)
    page = open_recorder(chromium, server, context=context)
    recording_id = start_recording(page)
    wait_for_safe(page, 1)
    context.set_offline(True)
    page.wait_for_function("() => Number(document.querySelector('#waiting').textContent) >= 3", timeout=30_000)
    page.close()  # no unload handler runs, like a crashed tab

    context.set_offline(False)
    again = open_recorder(chromium, server, context=context)
    again.get_by_text("The last recording was cut off").wait_for(timeout=30_000)
    assert number(again, "waiting") == 0
    final = wait_until(lambda: (s := status(server, observer, recording_id))["state"] == "interrupted"
                       and s["manifest_version"] and s, timeout=IDLE_SECONDS + 30, what="idle finalization")
    assert final["missing"] == [] and final["final_index"] is None
    assert held(final) == number(again, "safe") >= 4
    context.close()


def test_pieces_made_after_the_server_refused_the_recording_are_kept(chromium, server):
    """The server refuses the recording (here a 409 recording_conflict) while
    the camera is still running: the pieces that follow, the final one
    included, are set aside on the phone like the others, and the page keeps
    saying why, not that a piece could not be saved."""
    page = open_recorder(chromium, server, viewport=PHONE)
    page.route("**/v1/recordings", lambda route: route.fulfill(
        status=409, json={"error": "recording_conflict", "message": "This recording id is taken."})
        if route.request.method == "POST" else route.continue_())
    start_recording(page)
    page.get_by_text("The server refused this recording").wait_for()
    page.wait_for_function("() => document.querySelector('#elapsed').textContent >= '0:03'")
    page.get_by_role("button", name="Stop recording").click()
    page.locator("body[data-recorder-state=idle]").wait_for()
    alert = page.get_by_role("alert").inner_text()
    assert alert.startswith("The server refused this recording"), alert
    assert "kept on this phone" in alert and number(page, "waiting") == 0


# Web Locks are granted asynchronously; here, five seconds late.
SLOW_LOCKS = """(() => {
  const request = navigator.locks.request.bind(navigator.locks);
  navigator.locks.request = (...args) => new Promise((resolve, reject) =>
    setTimeout(() => request(...args).then(resolve, reject), 5000));
})();"""


def test_a_second_tab_opened_as_recording_starts_does_not_cut_it_off(chromium, server, observer):
    """A second tab of the recorder loads just as the first starts recording,
    before the first holds its recording's lock: it must not take the live
    recording for one whose page died (which would stop its later pieces
    from ever being sent)."""
    context = chromium.browser.new_context(viewport=PHONE)
    first = context.new_page()
    first.set_default_timeout(20_000)
    first.add_init_script(SLOW_LOCKS)
    first.goto(server.url + "/record")
    first.locator("#connection[data-state=online]").wait_for()
    recording_id = start_recording(first)
    second = open_recorder(chromium, server, context=context)
    second.locator("#connection[data-state=online]").wait_for()
    wait_for_safe(first, 8)
    first.get_by_role("button", name="Stop recording").click()
    first.get_by_text("Done. All").wait_for(timeout=30_000)
    final = wait_until(lambda: (s := status(server, observer, recording_id))["state"] == "complete" and s,
                       what="complete")
    assert final["missing"] == [] and final["received"] == [[0, final["final_index"]]]
    context.close()


STORED_DEVICE = """async (replacement) => {
  const { Outbox } = await import('/static/record/outbox.js');
  const outbox = await Outbox.open();
  if (replacement) await outbox.setSetting('device', replacement);
  return outbox.getSetting('device');
}"""


def test_expired_tokens_are_refreshed_and_an_ended_registration_replaced(chromium, server, observer):
    page = open_recorder(chromium, server, viewport=PHONE)
    device = wait_until(lambda: page.evaluate(STORED_DEVICE, None), what="registration")
    subject = f"device:{device['device_id']}"

    # An access token past its 15 minutes: refreshed, then the upload goes on.
    expired = server.forged_token(subject, "device", expires_in=-60, sid=str(uuid.uuid4()))
    page.evaluate(STORED_DEVICE, {**device, "access_token": expired})
    first = start_recording(page)
    wait_for_safe(page, 2)
    page.get_by_role("button", name="Stop recording").click()
    page.get_by_text("Done. All").wait_for(timeout=30_000)
    refreshed = page.evaluate(STORED_DEVICE, None)
    assert refreshed["device_id"] == device["device_id"] and refreshed["access_token"] != expired
    assert status(server, observer, first)["missing"] == []

    # A refresh token past its year too: the phone registers again, and a
    # recording not yet on the server goes with the new registration.
    ended = server.forged_token(subject, "device", expires_in=-60, kind="refresh", sid=str(uuid.uuid4()))
    page.evaluate(STORED_DEVICE, {**refreshed, "access_token": expired, "refresh_token": ended})
    second = start_recording(page)
    wait_for_safe(page, 2)
    page.get_by_role("button", name="Stop recording").click()
    page.get_by_text("Done. All").wait_for(timeout=30_000)
    assert page.evaluate(STORED_DEVICE, None)["device_id"] != device["device_id"]
    assert status(server, observer, second)["missing"] == []


def test_a_server_that_wants_an_enrollment_code(chromium, tmp_path):
    closed = ServerProcess(tmp_path / "closed", idle_seconds=IDLE_SECONDS, WITNESS_OPEN_ENROLLMENT="false").start()
    try:
        code = closed.cli("enrollment-code", "--note", "recorder test").stdout.strip()
        watcher = Staff(closed, "closed-observer", "observer")
        page = open_recorder(chromium, closed, viewport=PHONE)
        field = page.get_by_label("Code to join this server")
        field.wait_for()
        # Recording works before the code: the video waits on the phone.
        recording_id = start_recording(page)
        page.wait_for_function("() => Number(document.querySelector('#waiting').textContent) >= 2", timeout=30_000)
        field.fill("not-the-code")
        page.get_by_role("button", name="Join").click()
        page.get_by_text("That code was not accepted").wait_for()
        assert number(page, "safe") == 0
        both_widths(page, "record-enrollment-code")
        field.fill(code)
        page.get_by_role("button", name="Join").click()
        page.get_by_label("Code to join this server").wait_for(state="hidden")
        wait_for_safe(page, 3)
        page.get_by_role("button", name="Stop recording").click()
        page.get_by_text("Done. All").wait_for(timeout=30_000)
        final = wait_until(lambda: (s := status(closed, watcher, recording_id))["state"] == "complete" and s,
                           what="complete")
        assert final["missing"] == []

        # A link with the code registers a new phone on its own, and the
        # code does not stay in the address bar.
        other = chromium.new_page(viewport=PHONE)
        other.goto(f"{closed.url}/record?code={code}")
        other.locator("#connection[data-state=online]").wait_for()
        other.wait_for_function("() => !location.search.includes('code')")
        assert other.get_by_label("Code to join this server").is_hidden()
    finally:
        closed.stop()


class _Inline(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and "src" not in attrs:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{name}= on <{tag}>" for name in attrs if name == "style" or name.startswith("on")]


def test_the_page_has_a_strict_policy_and_nothing_inline(chromium, server):
    answer = requests.get(server.url + "/record")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html")
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    parser = _Inline()
    parser.feed(answer.text)
    assert parser.found == []
    page = chromium.new_page(viewport=PHONE)
    refused = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None)
    page.goto(server.url + "/record")
    page.get_by_role("button", name="Start recording").wait_for()
    page.locator("#connection[data-state=online]").wait_for()
    assert refused == []


def test_a_plain_http_address_is_refused_in_plain_words(chromium, server):
    """Not a secure context (plain http, not localhost): no camera and no
    WebCrypto, so the page says what to do instead of failing later. The
    page comes from the real server, relayed under a non-local name."""
    page = chromium.new_page(viewport=PHONE)
    page.route("http://witness.invalid/**", lambda route: route.fulfill(
        response=route.fetch(url=route.request.url.replace("http://witness.invalid", server.url))))
    page.goto("http://witness.invalid/record")
    assert page.evaluate("isSecureContext") is False
    page.get_by_text("This page must be opened over a secure connection.").wait_for()
    assert page.get_by_text("https://").is_visible()
    assert page.get_by_role("button", name="Recording is not possible here").is_disabled()


def test_the_button_works_from_the_keyboard(chromium, server):
    page = open_recorder(chromium, server, viewport=LAPTOP)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "record"
    focus = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert focus == "solid"  # a visible focus ring
    page.keyboard.press("Enter")
    page.locator("body[data-recorder-state=recording]").wait_for()
    wait_for_safe(page, 1)
    page.keyboard.press("Space")
    page.get_by_text("Done. All").wait_for(timeout=30_000)


def test_a_refused_camera_says_what_to_do(server):
    """The witness said no to the camera prompt (Chromium's fake prompt set
    to deny): the page says so in plain words and can be tried again."""
    from ..browser import Chromium

    refusing = Chromium(camera_allowed=False)
    try:
        page = refusing.new_page(viewport=PHONE)
        page.goto(server.url + "/record")
        page.get_by_role("button", name="Start recording").click()
        alert = page.get_by_role("alert")
        alert.wait_for()
        assert alert.inner_text().startswith("The camera or microphone was not allowed.")
        assert "press Start recording again" in alert.inner_text()
        assert page.get_by_role("button", name="Start recording").is_enabled()
        screenshot(page, "record-camera-refused")
    finally:
        refusing.close()
