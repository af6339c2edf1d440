"""The strategy checks of runner.yaml: import, check the params of, and build each strategy.

What ``multirun start`` would do, done by ``multirun validate``
(:class:`StrategyChecks`, a part of :mod:`multirun.config.loader`'s checker): a strategy that
cannot be imported, that exits while imported or built, whose ``params`` fail its
``params_schema``, or whose constructor refuses them, is a located problem (at
``strategy``, or at ``params`` when the params are to blame). A disabled account's
strategy problems are warnings: it starts nothing.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from multirun import strategies
from multirun.config.findings import Findings, Report, YamlPath, describe_error
from multirun.core.errors import StrategyError

# params_schemas already found valid (by their JSON text): 500 accounts of one strategy
# check its schema once, not 500 times (about 0.6 ms each)
_VALID_SCHEMAS: set[str] = set()

if TYPE_CHECKING:
    from multirun.config.loader import _Account


class StrategyChecks:
    """The strategy checks of :mod:`multirun.config.loader`'s checker (a mixin: it uses the
    checker's findings and its schema-error reporting)."""

    path: Path
    found: Findings
    report: Report

    if TYPE_CHECKING:  # the checker's own, declared here for the type checker

        def _usable(self, account: _Account, key: str) -> bool: ...
        def _is_news(self, path: YamlPath, error: jsonschema.ValidationError) -> bool: ...
        def _key_error(
            self,
            path: YamlPath,
            error: jsonschema.ValidationError,
            missing: Callable[[str], str],
        ) -> bool: ...
        def _quotable(self, path: YamlPath, value: Any) -> Any: ...

    def _check_strategy(self, account: _Account) -> None:
        """Import, check the params of, and build the strategy: what `start` would do.

        A disabled account's strategy problems are warnings: it starts nothing.
        """
        if account.values.get("enabled", True) is not False:
            self._check_strategy_of(account)
            return
        with self.found.as_warnings("disabled account"):
            self._check_strategy_of(account)

    def _check_strategy_of(self, account: _Account) -> None:
        if not self._usable(account, "strategy"):
            return
        ref = account.values["strategy"]
        where = account.origin("strategy")
        try:
            # A strategy module that prints while imported must not corrupt `--json` output.
            with contextlib.redirect_stdout(sys.stderr):
                strategy = strategies.resolve(ref, self.path.resolve().parent)
        except StrategyError as error:
            self.found.add(where, str(error))
            return
        except SystemExit:  # e.g. a script's argparse run at import: not ours to exit on
            self.found.add(where, f"strategy {ref!r} called exit while imported")
            return
        if "params" in account.values and not self._usable(account, "params"):
            return
        declared = strategies.params_schema(strategy)
        if declared is not None and not self._check_params(account, ref, declared):
            return
        self._build_strategy(account, ref, strategy)

    def _build_strategy(self, account: _Account, ref: str, strategy: strategies.Strategy) -> None:
        """Build it as the worker will: its constructor's refusals are problems here."""
        params = copy.deepcopy(account.values.get("params") or {})
        try:
            with contextlib.redirect_stdout(sys.stderr):
                strategies.build(strategy, params)
        except strategies.BuildError as error:
            by_params = error.by_params and "params" in account.values
            self.found.add(account.origin("params" if by_params else "strategy"), str(error))
        except SystemExit:
            self.found.add(account.origin("strategy"), f"strategy {ref!r} called exit when built")

    def _check_params(self, account: _Account, ref: str, declared: dict[str, Any]) -> bool:
        """Check params against the strategy's schema; True when they pass."""
        before = len(self.report.problems)
        try:
            validator_class = jsonschema.validators.validator_for(
                declared, default=jsonschema.Draft202012Validator
            )
            key = json.dumps(declared, sort_keys=True, default=repr)
            if key not in _VALID_SCHEMAS:
                validator_class.check_schema(declared)
                _VALID_SCHEMAS.add(key)
        except jsonschema.SchemaError as error:
            self.found.add(
                account.origin("strategy"),
                f"strategy {ref!r} declares an invalid params_schema: {error.message}",
            )
            return False
        params = account.values.get("params", {})
        base = account.origin("params")

        def missing(key: str) -> str:
            return f"missing required param '{key}' for strategy {ref!r}"

        for found in validator_class(declared).iter_errors(params):
            path = (*base, *found.absolute_path)
            if self._is_news(path, found) and not self._key_error(path, found, missing):
                shown = self._quotable(path, found.instance)
                self.found.add(path, describe_error(found, field=None, instance=shown))
        return len(self.report.problems) == before
