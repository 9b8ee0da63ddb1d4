"""Fixtures for the page tests: a real chromium per test (tests may kill it)."""

from __future__ import annotations

import pytest

from ..browser import Chromium


@pytest.fixture
def chromium():
    browser = Chromium()
    yield browser
    browser.close()
