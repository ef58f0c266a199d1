"""The cards of every sandbox scenario, rendered in a real browser as an EHR side panel shows them.

Debian's chromium (installed here with apt-get when missing) loads the preview page of each
scenario at 400 px and 720 px, headless with a fresh profile and no network but this machine's. The
page measures each card; the test holds the summary and opening lines to the height budget, and
writes a screenshot of each page for review.

Height budget (documented in the README): in a side panel whose visible height is 900 px, the
summary and opening lines of the first card (the most urgent) end within the first 900 px of the
page, and those of every card take at most 480 px at 400 px wide and 320 px at 720 px wide, so a
clinician sees each card's point and its next step without scrolling inside it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from calcinosis_tools.scenarios import load_scenarios, patients_dir
from hooks.app import create_app
from hooks.settings import Settings

VIEWPORT_HEIGHT = 900
OPENING_BUDGET = {400: 480, 720: 320}
SCENARIOS = [s.name for s in load_scenarios() if s.expected is not None]
SCREENSHOTS = Path(
    os.environ.get("CALCINOSIS_SCREENSHOT_DIR", Path(__file__).resolve().parents[1] / ".artifacts" / "card-preview")
)


def chromium() -> str:
    """Debian's chromium, installed with apt-get if this machine has none yet."""
    found = shutil.which("chromium")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True, timeout=900)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env, capture_output=True, timeout=1800
    )
    found = shutil.which("chromium")
    assert found, "chromium was not installed"
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def preview_url() -> Iterator[str]:
    app = create_app(
        Settings(
            auth_disabled=True,
            feedback_database_url="memory://",
            preview_enabled=True,
            preview_scenarios=patients_dir(),
        )
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "the preview server did not start"
    try:
        yield f"http://127.0.0.1:{port}/preview"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_chromium(*args: str) -> str:
    binary = chromium()
    with tempfile.TemporaryDirectory(prefix="calcinosis-chromium-") as profile:
        result = subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


PANEL_TOP = 80
"""Pixels above the side panel in the single-scenario view (page header and margins)."""


@pytest.fixture(scope="module")
def measured(preview_url: str) -> dict[int, list[dict[str, Any]]]:
    """Each card of every scenario, measured on the gallery page at each width."""
    layouts = {}
    for width in OPENING_BUDGET:
        dom = run_chromium(
            f"--window-size={width + 48},{VIEWPORT_HEIGHT}",
            "--virtual-time-budget=8000",
            "--dump-dom",
            f"{preview_url}?scenario=all&width={width}",
        )
        match = re.search(r'<pre id="layout">(.*?)</pre>', dom, re.DOTALL)
        assert match and match.group(1).strip(), "the page did not report its layout"
        layouts[width] = json.loads(match.group(1))
    return layouts


@pytest.mark.parametrize("width", sorted(OPENING_BUDGET))
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_summary_and_opening_lines_visible_without_scrolling(
    preview_url: str, measured: dict[int, list[dict[str, Any]]], scenario: str, width: int
) -> None:
    cards = [card for card in measured[width] if card["scenario"] == scenario]
    assert cards, f"{scenario}: no card rendered"
    assert PANEL_TOP + cards[0]["openingBottom"] <= VIEWPORT_HEIGHT, (scenario, width, cards[0])
    for card in cards:
        assert card["openingHeight"] <= OPENING_BUDGET[width], (scenario, width, card)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{scenario}-{width}.png"
    run_chromium(
        f"--window-size={width + 48},{VIEWPORT_HEIGHT}",
        f"--screenshot={target}",
        f"{preview_url}?scenario={scenario}&width={width}",
    )
    assert target.stat().st_size > 1000
