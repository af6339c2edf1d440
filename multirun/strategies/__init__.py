"""Strategies: what an account trades, as a signal per tick.

A strategy is either

* a class whose instances have ``on_tick(ctx) -> Signal | str | None``; it is built
  as ``cls(params)`` when its ``__init__`` takes an argument, else ``cls()``; or
* a plain function ``f(ctx) -> Signal | str | None``.

Either may declare ``params_schema`` (a JSON Schema dict) as an attribute;
``multirun validate`` checks the account's ``params`` against it.

A signal is the position the strategy wants: ``BUY`` (long ``volume``), ``SELL``
(short ``volume``), ``FLAT`` (nothing open), or ``None`` (no change).

Strategies are named either by a built-in name (``random``, ``sma_cross``) or as
``package.module:Attr``, imported with the config file's directory first on the
import path.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from multirun.core.errors import StrategyError

BUILTINS: dict[str, str] = {
    "random": "multirun.strategies.coin:RandomStrategy",
    "sma_cross": "multirun.strategies.sma_cross:SmaCross",
}


class Signal(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"
    FLAT = "FLAT"

    @classmethod
    def parse(cls, value: object) -> Signal | None:
        """A strategy's return value as a Signal; ``None`` and ``""`` mean no change."""
        if value is None or value == "":
            return None
        if isinstance(value, cls):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise StrategyError(f"strategy returned {value!r}: expected BUY, SELL, FLAT or None")


OnTick = Callable[[Any], object]
# A resolved strategy: a class (built with or without params) or an on_tick function.
Strategy = Callable[..., object]


def resolve(ref: str, config_dir: Path | None = None) -> Strategy:
    """The strategy class or function named by ``ref`` (a built-in or ``module:Attr``)."""
    target = BUILTINS.get(ref, ref)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        known = ", ".join(sorted(BUILTINS))
        raise StrategyError(
            f"unknown strategy {ref!r}: use a built-in ({known}) or 'package.module:Attr'"
        )
    module = _import(module_name, config_dir)
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise StrategyError(f"strategy {ref!r}: module {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise StrategyError(f"strategy {ref!r} is neither a class nor a function")
    return obj


def _import(module_name: str, config_dir: Path | None) -> ModuleType:
    added = False
    if config_dir is not None and str(config_dir) not in sys.path:
        sys.path.insert(0, str(config_dir))
        added = True
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise StrategyError(f"cannot import strategy module {module_name!r}: {exc}") from None
    except Exception as exc:  # user code failed while importing: say where, no traceback
        raise StrategyError(
            f"strategy module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        if added:
            sys.path.remove(str(config_dir))


def params_schema(strategy: Strategy) -> dict[str, Any] | None:
    """The JSON Schema a strategy declares for its params, if any."""
    schema = getattr(strategy, "params_schema", None)
    return dict(schema) if isinstance(schema, Mapping) else None


class BuildError(StrategyError):
    """A strategy that cannot be built; ``by_params``: its constructor refused its params."""

    def __init__(self, message: str, *, by_params: bool) -> None:
        super().__init__(message)
        self.by_params = by_params


def build(strategy: Strategy, params: Mapping[str, Any]) -> OnTick:
    """A ready ``on_tick(ctx)`` callable from a resolved strategy and its params.

    Raises :class:`BuildError` when the constructor raises (``sma_cross`` with
    ``fast: 20, slow: 5``) or the instance has no ``on_tick``: a deterministic failure,
    the same at every try, that ``multirun validate`` reports before anything starts.
    """
    if inspect.isclass(strategy):
        make: Strategy = strategy
        try:
            takes_params = len(inspect.signature(strategy).parameters) >= 1
            instance = make(dict(params)) if takes_params else make()
        except Exception as exc:
            if isinstance(exc, StrategyError):
                raise BuildError(str(exc), by_params=True) from None
            raise BuildError(
                f"strategy {strategy.__name__} could not be created: {type(exc).__name__}: {exc}",
                by_params=True,
            ) from None
        on_tick = getattr(instance, "on_tick", None)
        if not callable(on_tick):
            raise BuildError(
                f"strategy {strategy.__name__} has no on_tick(ctx) method", by_params=False
            )
        return on_tick
    return strategy
