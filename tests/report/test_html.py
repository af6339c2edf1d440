"""`multirun report --html/--png`: a self-contained page, checked in a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from multirun import report
from tests.report.test_stats import T0, add_equity, add_order, make_journal

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
)  # fmt: skip


def two_accounts(state: Path) -> None:
    for k, name in enumerate(("alpha", "beta")):
        path = make_journal(state, name)
        nav = 1000.0
        points = []
        for i in range(40):
            nav += (7.0 if (i + k) % 3 else -9.0) * (1 + k)
            points.append((T0 + i * 30, nav))
        add_equity(path, points)
        for i in range(6):
            start = T0 + 15 + i * 180
            pl = (5.0 - 3 * (i % 3)) * (1 + k)
            side = "BUY" if i % 2 else "SELL"
            add_order(path, f"{name}{i}", side=side, created=start, opened=start + 1,
                      closed=start + 120, pl=pl)  # fmt: skip
        add_order(path, f"{name}-open", state="OPEN", created=T0 + 1150, opened=T0 + 1151)


@pytest.mark.slow
def test_png_is_an_image_of_the_stated_size(tmp_path: Path) -> None:
    from PIL import Image

    from multirun.report.chart import HEIGHT_PX, WIDTH_PX

    two_accounts(tmp_path)
    out = tmp_path / "r.png"
    report.run(tmp_path, png_path=out, echo=lambda _: None)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (WIDTH_PX, HEIGHT_PX)


def test_html_fetches_nothing(tmp_path: Path) -> None:
    two_accounts(tmp_path)
    out = tmp_path / "r.html"
    report.run(tmp_path, html_path=out, echo=lambda _: None)
    page = out.read_text()
    assert "<svg" in page and "alpha" in page and "TOTAL" in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert (
        "<script" not in page.lower()
        and "@import" not in page
        and not re.search(r"url\(\s*['\"]?[^#'\"\s]", page)
    )
    assert "<link" not in page.lower() and "<img" not in page.lower()


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)"
)
@pytest.mark.process
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image

    two_accounts(tmp_path)
    page = tmp_path / "r.html"
    report.run(tmp_path, html_path=page, echo=lambda _: None)
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [str(CHROMIUM), *_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
             "--window-size=1280,900", page.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert shot.exists(), done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000) or []
    # a blank page has one colour; the chart draws lines of several
    assert len(colours) > 50
