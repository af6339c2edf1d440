"""Built-in strategies: random reproduces the seed script, sma_cross follows the averages."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from multirun import strategies
from multirun.api.models import Bar, Quote
from multirun.config.specs import AccountSpec, freeze
from multirun.core.errors import StrategyError
from multirun.core.redact import Secret
from multirun.strategies import Signal
from multirun.strategies.coin import CHOICES, RandomStrategy
from multirun.strategies.context import Decision, OpenTrade, StrategyContext
from multirun.strategies.sma_cross import SmaCross


def spec(strategy: str = "random", **params: Any) -> AccountSpec:
    return AccountSpec(
        name="alpha",
        user="alice",
        api_key=Secret("alice-key"),
        accountid="ACC-1",
        runmode="livetest",
        strategy=strategy,
        instrument="BTCUSD",
        volume=1.0,
        interval_s=60,
        params=freeze(params),
    )


def context(
    account: AccountSpec,
    *,
    state: dict[str, Any] | None = None,
    closes: list[float] | None = None,
    trades: tuple[OpenTrade, ...] = (),
) -> StrategyContext:
    bars = [Bar(t=str(i), open=c, high=c, low=c, close=c) for i, c in enumerate(closes or [])]
    return StrategyContext(
        spec=account,
        state={} if state is None else state,
        log=logging.getLogger("test"),
        tick_utc=datetime(2026, 1, 1, tzinfo=UTC),
        open_trades=trades,
        _quote=lambda symbol: Quote(symbol, "t", 99.0, 101.0),
        _history=lambda instrument, interval, count: bars[-count:],
    )


def seed_script_draws(seed: int, n: int) -> list[str]:
    """What ALGOGENE's example script draws, with ``random`` seeded the same way."""
    rng = random.Random(seed)
    return [rng.choice(["BUY", "SELL", ""]) for _ in range(n)]


def as_seed_choice(result: object) -> str:
    decision = Decision.of(result)
    if decision.signal is Signal.FLAT:
        return ""
    assert decision.fresh, "BUY/SELL must close and reopen, like the seed"
    return decision.signal.value


def test_builtins_resolve_and_declare_schemas() -> None:
    for name, cls in (("random", RandomStrategy), ("sma_cross", SmaCross)):
        assert strategies.resolve(name) is cls
        schema = strategies.params_schema(cls)
        assert schema is not None
        jsonschema.Draft202012Validator.check_schema(schema)


def test_random_reproduces_the_seed_scripts_draws() -> None:
    assert CHOICES == ("BUY", "SELL", "")
    on_tick = strategies.build(RandomStrategy, {"seed": 7})
    ctx = context(spec(seed=7))
    ours = [as_seed_choice(on_tick(ctx)) for _ in range(50)]
    assert ours == seed_script_draws(7, 50)
    assert ctx.state["draws"] == 50
    assert {"BUY", "SELL", ""} == set(ours)


def test_random_continues_its_sequence_after_a_restart() -> None:
    first = strategies.build(RandomStrategy, {"seed": 3})
    state: dict[str, Any] = {}
    before = [as_seed_choice(first(context(spec(seed=3), state=state))) for _ in range(10)]
    restarted = strategies.build(RandomStrategy, {"seed": 3})  # state came from the journal
    after = [as_seed_choice(restarted(context(spec(seed=3), state=state))) for _ in range(10)]
    assert before + after == seed_script_draws(3, 20)


def test_random_without_a_seed_still_draws_all_three() -> None:
    on_tick = strategies.build(RandomStrategy, {})
    ctx = context(spec())
    assert {as_seed_choice(on_tick(ctx)) for _ in range(200)} == {"BUY", "SELL", ""}


def test_random_rejects_a_non_integer_seed() -> None:
    schema = strategies.params_schema(RandomStrategy)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"seed": "x"}, schema)


@pytest.mark.parametrize(
    ("closes", "expected"),
    [
        ([1, 1, 1, 1, 2, 3], Signal.BUY),  # recent closes above the long average
        ([3, 3, 3, 3, 2, 1], Signal.SELL),
        ([2, 2, 2, 2, 2, 2], Signal.FLAT),  # equal averages
        ([1, 2, 3], Signal.FLAT),  # not enough bars yet
    ],
)
def test_sma_cross_signals(closes: list[float], expected: Signal) -> None:
    on_tick = strategies.build(SmaCross, {"fast": 2, "slow": 6, "interval": "M"})
    assert on_tick(context(spec("sma_cross"), closes=closes)) is expected


def test_sma_cross_asks_for_slow_bars_of_its_interval() -> None:
    asked: list[tuple[str, str, int]] = []
    ctx = context(spec("sma_cross"))

    def history(instrument: str, interval: str, count: int) -> list[Bar]:
        asked.append((instrument, interval, count))
        return []

    ctx._history = history
    strategies.build(SmaCross, {"fast": 3, "slow": 10, "interval": "M5"})(ctx)
    assert asked == [("BTCUSD", "M5", 10)]


def test_sma_cross_defaults_and_schema() -> None:
    strategy = SmaCross({})
    assert (strategy.fast, strategy.slow, strategy.interval) == (5, 20, "M")
    schema = strategies.params_schema(SmaCross)
    jsonschema.validate({"fast": 3, "slow": 30, "interval": "H"}, schema)
    for bad in ({"fast": 0}, {"interval": "X"}, {"slwo": 3}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_sma_cross_needs_fast_below_slow() -> None:
    with pytest.raises(StrategyError, match="fast"):
        strategies.build(SmaCross, {"fast": 10, "slow": 5})


def test_context_exposes_the_account_prices_and_position() -> None:
    trades = (
        OpenTrade("mr-alpha-1", "1", "BTCUSD", "BUY", 1.0),
        OpenTrade("mr-alpha-2", "2", "BTCUSD", "SELL", 0.25),
    )
    ctx = context(spec(seed=1), trades=trades)
    assert ctx.params["seed"] == 1
    assert ctx.instrument == "BTCUSD"
    assert ctx.price().mid == 100.0
    assert ctx.position == 0.75


def test_decision_of_accepts_signals_names_and_none() -> None:
    assert Decision.of("buy") == Decision(Signal.BUY)
    assert Decision.of(None) == Decision(None)
    assert Decision.of(Decision(Signal.SELL, fresh=True)).fresh
    with pytest.raises(StrategyError):
        Decision.of("LONG")


def test_a_decision_built_with_a_signal_name_is_parsed_like_a_bare_one() -> None:
    # Signal names are accepted everywhere else; a Decision must not turn them into an
    # AttributeError deep in the worker's planning.
    assert Decision.of(Decision("buy", fresh=True)) == Decision(Signal.BUY, fresh=True)  # type: ignore[arg-type]
    with pytest.raises(StrategyError, match="expected BUY, SELL, FLAT or None"):
        Decision.of(Decision("LONG"))  # type: ignore[arg-type]
