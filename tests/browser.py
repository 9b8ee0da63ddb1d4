"""Test support for the pages: Debian's chromium driven by Playwright, with
Chromium's fake camera and microphone, screenshots saved as test artifacts,
and a way to kill the browser the way a phone knocked out of a hand dies.

Playwright is used only as a driver: the browser is `/usr/bin/chromium`
(installed by scripts/bootstrap), never one that Playwright downloads."""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

from .support import PROJECT_ROOT

SCREENSHOTS = Path(os.environ.get("WITNESS_SCREENSHOTS_DIR", PROJECT_ROOT / "test-artifacts" / "screenshots"))
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1366, "height": 900}

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # This machine's network is closed: without these, chromium keeps trying
    # to reach Google's hosts.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Chromium's fake camera (a test pattern) and microphone (a beep), and no
    # permission prompt.
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]


class Chromium:
    """One headless chromium started through Playwright. `kill()` sends
    SIGKILL to the browser process itself: no unload handler runs, nothing
    is flushed, exactly like a smashed phone."""

    def __init__(self, *, camera_allowed: bool = True):
        flags = CHROMIUM_FLAGS if camera_allowed else [
            "--use-fake-ui-for-media-stream=deny" if flag == "--use-fake-ui-for-media-stream" else flag
            for flag in CHROMIUM_FLAGS]
        self._playwright = sync_playwright().start()
        self._driver_pid = _driver_pid(self._playwright)
        before = set(_descendants(self._driver_pid))
        self.browser: Browser = self._playwright.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True, args=flags)
        self.pid = _browser_pid(set(_descendants(self._driver_pid)) - before)

    def new_page(self, viewport: dict = LAPTOP, **context_options) -> Page:
        context = self.browser.new_context(viewport=viewport, **context_options)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        if self._playwright is None:
            return
        try:
            self.browser.close()
        except Exception:  # already killed: the driver reports the lost browser
            pass
        self._playwright.stop()
        self._playwright = None


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as `<name>-<width>px.png` in the artifacts folder
    (test-artifacts/screenshots, or WITNESS_SCREENSHOTS_DIR)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}-{page.viewport_size['width']}px.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _driver_pid(playwright) -> int:
    # Playwright runs its Node driver as a child of this process; the browser
    # is started by that driver. There is no public API for either PID.
    children = [pid for pid in _descendants(os.getpid()) if "playwright" in _cmdline(pid) or "node" in _cmdline(pid)]
    if not children:
        raise RuntimeError("the Playwright driver process was not found")
    return children[-1]


def _browser_pid(candidates: set[int]) -> int:
    """The chromium main process: a chromium process without `--type=` (the
    renderers, GPU and utility processes all carry one)."""
    for pid in sorted(candidates):
        command = _cmdline(pid)
        if "chrom" in command and "--type=" not in command:
            return pid
    raise RuntimeError(f"the chromium main process was not found among {sorted(candidates)}")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(re.match(r".*\) \S+ (\d+)", stat, re.S).group(1))
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
