"""`multirun report --html/--png`: a self-contained page, checked in a real headless browser."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from multirun import report
from tests.conftest import wait_until
from tests.report.test_stats import T0, add_equity, add_order, make_journal

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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


TAB10_BLUE, TAB10_ORANGE = (31, 119, 180), (255, 127, 14)  # the two accounts' curves


def near(pixel: tuple[int, int, int], colour: tuple[int, int, int], within: int = 24) -> bool:
    return all(abs(a - b) <= within for a, b in zip(pixel, colour, strict=True))


def count(image: Any, box: Sequence[float], test: Callable[[tuple[int, int, int]], bool]) -> int:
    """How many pixels of ``box`` (x, y, width, height in CSS px = pixels) pass ``test``."""
    x, y, w, h = (round(v) for v in box)
    region = image.crop((x, y, x + w, y + h))
    return sum(n for n, pixel in region.getcolors(maxcolors=max(1, w * h)) if test(pixel))


_BOXES = """(() => { const box = e => { const r = e.getBoundingClientRect();
  return [r.x, r.y, r.width, r.height]; };
  return { chart: box(document.querySelector('.chart svg')),
           trades: box(document.querySelector('table.trades')),
           rows: [...document.querySelectorAll('table.trades tbody tr')].map(box),
           texts: [...document.querySelectorAll('table.trades tbody tr')].map(r => r.innerText) };
})()"""


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)"
)
@pytest.mark.process
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The page in a real browser: the curves drawn in the chart's box, and each trade a
    row of the trades table, its text painted inside the screenshot."""
    from PIL import Image

    from tests.web.cdp import Browser

    two_accounts(tmp_path)
    page = tmp_path / "r.html"
    report.run(tmp_path, html_path=page, echo=lambda _: None)
    browser = Browser(width=1280, height=1700)
    try:
        browser.open(page.as_uri())
        wait_until(lambda: browser.eval("document.readyState") == "complete", 20)
        boxes = browser.eval(_BOXES)
        shot = browser.screenshot()
    finally:
        browser.close()
    (tmp_path / "shot.png").write_bytes(shot)  # to look at: pytest --basetemp=DIR
    with Image.open(io.BytesIO(shot)) as raw:
        image = raw.convert("RGB")
    assert image.size == (1280, 1700)
    for colour in (TAB10_BLUE, TAB10_ORANGE):  # the curves of alpha and beta
        assert count(image, boxes["chart"], partial(near, colour=colour)) > 300, colour
    # 6 closed trades and 1 open per account, all inside the window, each row painted
    assert len(boxes["rows"]) == 14
    assert sum(1 for t in boxes["texts"] if "alpha" in t) == 7
    assert boxes["trades"][1] + boxes["trades"][3] <= 1700, "trades table below the window"
    for row in boxes["rows"]:
        assert count(image, row, lambda px: max(px) < 120) > 100  # its text, drawn
    red = count(image, boxes["trades"], lambda px: near(px, (192, 57, 43), 40))
    green = count(image, boxes["trades"], lambda px: near(px, (26, 127, 55), 40))
    assert red > 50 and green > 50  # losses and gains coloured
