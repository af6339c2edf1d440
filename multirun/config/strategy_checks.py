"""The strategy checks of runner.yaml: import, check the params of, and build each strategy.

What ``multirun start`` would do, done by ``multirun validate`` (:func:`check_strategy`,
called by :mod:`multirun.config.loader` for each account): a strategy that cannot be
imported, that exits while imported or built, whose ``params`` fail its
``params_schema``, or whose constructor refuses them, is a located problem (at
``strategy``, or at ``params`` when the params are to blame). A disabled account's
strategy problems are warnings: it starts nothing.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema

from multirun import strategies
from multirun.config.entry import AccountEntry
from multirun.config.findings import Findings
from multirun.config.schema_errors import add_schema_errors
from multirun.core.errors import StrategyError

# params_schemas already found valid (by their JSON text): 500 accounts of one strategy
# check its schema once, not 500 times (about 0.6 ms each)
_VALID_SCHEMAS: set[str] = set()


def check_strategy(account: AccountEntry, found: Findings, config_dir: Path) -> None:
    """Import, check the params of, and build the account's strategy: what `start` would do.

    ``config_dir``: the runner file's directory, where a strategy module is looked for.
    A disabled account's strategy problems are warnings: it starts nothing.
    """
    if account.values.get("enabled", True) is not False:
        _check_strategy_of(account, found, config_dir)
        return
    with found.as_warnings("disabled account"):
        _check_strategy_of(account, found, config_dir)


def _check_strategy_of(account: AccountEntry, found: Findings, config_dir: Path) -> None:
    if not account.usable("strategy", found):
        return
    ref = account.values["strategy"]
    where = account.origin("strategy")
    try:
        # A strategy module that prints while imported must not corrupt `--json` output.
        with contextlib.redirect_stdout(sys.stderr):
            strategy = strategies.resolve(ref, config_dir)
    except StrategyError as error:
        found.add(where, str(error))
        return
    except SystemExit:  # e.g. a script's argparse run at import: not ours to exit on
        found.add(where, f"strategy {ref!r} called exit while imported")
        return
    if "params" in account.values and not account.usable("params", found):
        return
    declared = strategies.params_schema(strategy)
    if declared is not None and not _check_params(account, found, ref, declared):
        return
    _build_strategy(account, found, ref, strategy)


def _build_strategy(
    account: AccountEntry, found: Findings, ref: str, strategy: strategies.Strategy
) -> None:
    """Build it as the worker will: its constructor's refusals are problems here."""
    params = copy.deepcopy(account.values.get("params") or {})
    try:
        with contextlib.redirect_stdout(sys.stderr):
            strategies.build(strategy, params)
    except strategies.BuildError as error:
        by_params = error.by_params and "params" in account.values
        found.add(account.origin("params" if by_params else "strategy"), str(error))
    except SystemExit:
        found.add(account.origin("strategy"), f"strategy {ref!r} called exit when built")


def _check_params(
    account: AccountEntry, found: Findings, ref: str, declared: dict[str, Any]
) -> bool:
    """Check params against the strategy's schema; True when they pass."""
    validator_class = _params_validator(account, found, ref, declared)
    if validator_class is None:
        return False
    before = len(found.report.problems)

    def missing(key: str) -> str:
        return f"missing required param '{key}' for strategy {ref!r}"

    params = account.values.get("params", {})
    add_schema_errors(
        found,
        validator_class(declared).iter_errors(params),
        missing=missing,
        base=account.origin("params"),
        field_hints=False,  # a param named `interval` is the strategy's, not runner.yaml's
    )
    return len(found.report.problems) == before


def _params_validator(
    account: AccountEntry, found: Findings, ref: str, declared: dict[str, Any]
) -> type[jsonschema.protocols.Validator] | None:
    """The validator class of the strategy's params_schema; None (a problem) if invalid."""
    try:
        validator_class = jsonschema.validators.validator_for(
            declared, default=jsonschema.Draft202012Validator
        )
        key = json.dumps(declared, sort_keys=True, default=repr)
        if key not in _VALID_SCHEMAS:
            validator_class.check_schema(declared)
            _VALID_SCHEMAS.add(key)
    except jsonschema.SchemaError as error:
        found.add(
            account.origin("strategy"),
            f"strategy {ref!r} declares an invalid params_schema: {error.message}",
        )
        return None
    return validator_class
