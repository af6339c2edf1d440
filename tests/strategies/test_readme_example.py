"""README's "Writing a strategy" example validates and trades as it says."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from multirun import strategies
from multirun.api.models import Bar
from multirun.config import loader as config
from multirun.strategies import Signal

ROOT = Path(__file__).resolve().parents[2]


def example_blocks() -> tuple[str, str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- strategies:start -->")[1].split("<!-- strategies:end -->")[0]
    python = re.search(r"```python\n(.*?)```", section, re.S)
    yaml = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert python and yaml
    return python.group(1), yaml.group(1)


def write_example(tmp_path: Path) -> Path:
    python, accounts = example_blocks()
    (tmp_path / "mystrategies.py").write_text(python)
    header = "version: 1\nserver: sim\ndefaults:\n  user: demo\n  api_key: sim-demo-key\n"
    (tmp_path / "runner.yaml").write_text(header + "  runmode: livetest\n" + accounts)
    return tmp_path / "runner.yaml"


def test_the_example_validates(tmp_path: Path) -> None:
    report = config.validate(write_example(tmp_path))
    assert report.ok, [str(p) for p in report.problems]
    assert report.spec is not None
    assert report.spec.accounts[0].strategy == "mystrategies:Breakout"


def test_the_example_signals_as_documented(tmp_path: Path) -> None:
    runner = config.load(write_example(tmp_path))
    spec = runner.accounts[0]
    target = strategies.resolve(spec.strategy, runner.config_dir)
    on_tick = strategies.build(target, spec.params)

    def decide(closes: list[float]) -> Any:
        bars = [Bar(str(i), c, c, c, c) for i, c in enumerate(closes)]
        ctx = SimpleNamespace(history=lambda interval, count: bars[-count:],
                              log=logging.getLogger("test"))  # fmt: skip
        return on_tick(ctx)

    flat = [100.0] * 10
    assert decide([*flat, 101.0]) == Signal.BUY
    assert decide([*flat, 99.0]) == Signal.SELL
    assert decide([*flat, 100.0]) is None
    assert decide([100.0] * 5) is None  # not enough bars yet
