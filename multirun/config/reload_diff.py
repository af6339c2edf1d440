"""What a reload would change: the pure diff of a running RunnerSpec and an edited one.

``plan(old, new)`` compares the two specs by account name, on the EFFECTIVE account
spec (``defaults`` merged, variables interpolated, the schema's defaults filled in), so
moving a value from an account into ``defaults`` changes nothing. It does no I/O and
imports no strategy; the supervisor applies the plan (see ``multirun reload``).

Top-level settings:

- ``state_dir``, ``server``, ``version``, ``metrics`` and ``web`` cannot apply live and are
  *refused*: the state directory holds the running supervisor's pidfile, socket and every
  journal; the
  server (and the simulator child of ``server: sim``) is shared by every worker; the
  version changes what the file means. A plan with anything refused must change nothing:
  a full ``multirun stop`` then ``start`` is needed.
- ``stop_timeout`` and ``watchdog_timeout`` are supervisor settings the running
  supervisor applies live (listed in ``settings``); no worker restarts for them. So is the
  file's ``risk`` (its limits and ``on_breach``: the supervisor sums the accounts), except
  ``risk.day_starts``: every worker counts its day from it, so a change of it is a change
  of every account (restarted: trades and a journaled pause carry over).
- An account's own ``risk`` and ``trading_hours`` are account fields: a change restarts
  its worker, which keeps its trades (journal) and a journaled pause.

Accounts: an account whose journal holds trades (``held``, from the caller: this module
reads no file) keeps its server account: an edit of its ``user``, ``runmode`` or
``accountid`` is *refused*, the trades named. The new account's listings would never
show them: the next worker would take them for closed while the server keeps them open on
the old account. Close them first (or change it back).

Every account line says what it does to money (``effects``, from ``held`` and the
running spec's ``on_stop``): ``- coin-aud: removed: stopped; on_stop close: closes 1
trade: trade 7 SELL 0.1 AUDUSD (...)``, or ``on_stop keep: leaves ... open``; a changed
account is stopped the same way before its new process starts; ``=`` touches nothing.
An account the edit makes ``livetrade`` (real money) while the supervisor runs without
``--live`` is *refused* (``live=False``), saying how to start it live.

Secrets are compared but never shown: a changed ``api_key`` reads ``api_key: changed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from multirun.config.specs import AccountSpec, RunnerSpec, format_interval, thaw
from multirun.core.redact import Secret, mask_fields

# Settings that need a full restart, with the reason shown to the user.
REFUSED_SETTINGS: dict[str, str] = {
    "state_dir": "the state directory holds the running supervisor's files and journals",
    "server": "every worker (and the simulator of `server: sim`) uses it",
    "version": "it changes what the whole file means",
    "metrics": "the metrics server is bound once, at start",
    "web": "the dashboard is bound once, at start",
    "tick_spread": "every worker's wake-up offset follows from it",
}
# Supervisor settings the running supervisor takes over without restarting a worker.
LIVE_SETTINGS = ("stop_timeout", "watchdog_timeout", "risk")


@dataclass(frozen=True)
class ReloadPlan:
    """A reload's diff; account lists are sorted by name, ``changed`` maps name -> changes."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unchanged: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()  # one line per refused top-level setting
    settings: tuple[str, ...] = ()  # live supervisor settings changed, 'key: old -> new'
    effects: Mapping[str, str] = field(default_factory=dict)  # name -> effect on positions

    @property
    def ok(self) -> bool:
        """True when the plan may be applied (nothing refused)."""
        return not self.refused

    @property
    def is_empty(self) -> bool:
        """True when applying the plan would change nothing."""
        return not (self.added or self.removed or self.changed or self.settings)

    def lines(self) -> list[str]:
        """The plan as printed, each account line with its effect on positions:
        ``+ a: added: ...``, ``- b: removed: ...``, ``~ c: volume 0.01 -> 0.02: ...``,
        ``= d: unchanged: ...``."""
        out = [f"! {line}" for line in self.refused]
        out += [self._line("+", name, "added") for name in self.added]
        out += [self._line("-", name, "removed") for name in self.removed]
        out += [
            self._line("~", name, ", ".join(c.replace(": ", " ", 1) for c in self.changed[name]))
            for name in sorted(self.changed)
        ]
        out += [self._line("=", name, "unchanged") for name in self.unchanged]
        out += [
            f"~ (supervisor) {line}: applied live, no account restarts" for line in self.settings
        ]
        return out

    def _line(self, mark: str, name: str, what: str) -> str:
        effect = self.effects.get(name) if self.ok else None  # refused: nothing happens
        return f"{mark} {name}: {what}" + (f": {effect}" if effect else "")

    def to_dict(self) -> dict[str, Any]:
        """The plan for ``--json``; as safe to print as :meth:`lines`."""
        return {
            "ok": self.ok,
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": {name: list(self.changed[name]) for name in sorted(self.changed)},
            "unchanged": list(self.unchanged),
            "refused": list(self.refused),
            "settings": list(self.settings),
            "effects": dict(sorted(self.effects.items())),
        }


# The fields naming the server account an account trades (with the top-level server).
BINDING_FIELDS = ("user", "runmode", "accountid")
# What an account's journal holds, named (one string per trade): nothing by default.
Held = Callable[[str], tuple[str, ...]]


def plan(
    old: RunnerSpec, new: RunnerSpec, held: Held = lambda name: (), *, live: bool = True
) -> ReloadPlan:
    """What reloading ``new`` over a supervisor running ``old`` would do; ``held(name)``:
    the trades account ``name``'s journal holds (a binding change of one is refused);
    ``live``: the supervisor runs with ``--live`` (else a new livetrade account is refused)."""
    old_by_name = {a.name: a for a in old.accounts}
    new_by_name = {a.name: a for a in new.accounts}
    changed: dict[str, tuple[str, ...]] = {}
    unchanged: list[str] = []
    for name in sorted(old_by_name.keys() & new_by_name.keys()):
        diff = account_changes(old_by_name[name], new_by_name[name]) + _day_start(old, new)
        if diff:
            changed[name] = tuple(diff)
        else:
            unchanged.append(name)
    added = tuple(sorted(new_by_name.keys() - old_by_name.keys()))
    removed = tuple(sorted(old_by_name.keys() - new_by_name.keys()))
    effects = {name: _started(new_by_name[name], held(name)) for name in added}
    effects |= {name: _stopped(old_by_name[name], held(name), new.path) for name in removed}
    effects |= {
        name: _restarted(old_by_name[name], new_by_name[name], held(name), new.path)
        for name in changed
    }
    effects |= {name: "same process, its positions untouched" for name in unchanged}
    refused = _refused(old, new) + _rebound(old_by_name, new_by_name, held, new.path)
    if not live:
        refused += _real_money(old_by_name, new_by_name, new.path)
    return ReloadPlan(
        added=added,
        removed=removed,
        changed=changed,
        unchanged=tuple(unchanged),
        refused=tuple(refused),
        settings=tuple(_live_settings(old, new)),
        effects=effects,
    )


def _holding(trades: tuple[str, ...]) -> str:
    return f"{len(trades)} trade(s): {'; '.join(trades)}"


def _started(spec: AccountSpec, trades: tuple[str, ...]) -> str:
    if not spec.enabled:
        return "not started (enabled: false)" + (f", its journal holds {_holding(trades)}"
                                                  if trades else "")  # fmt: skip
    if trades:
        return f"started; adopts what its journal holds, {_holding(trades)}"
    return "started, holding nothing yet"


def _stopped(spec: AccountSpec, trades: tuple[str, ...], path: object) -> str:
    """A removed account's stop: its (running) on_stop on what its journal holds."""
    if not trades:
        return "stopped, holding nothing"
    if spec.on_stop == "close":
        return f"stopped; on_stop close: closes {_holding(trades)}"
    return (
        f"stopped; on_stop keep: leaves {_holding(trades)} open, journaled (`multirun close "
        f"{path} {spec.name}` closes them)"
    )


def _restarted(old: AccountSpec, new: AccountSpec, trades: tuple[str, ...], path: object) -> str:
    """A changed account: stopped with its running on_stop, then started anew."""
    if old.enabled and not new.enabled:
        return _stopped(old, trades, path).replace("stopped", "stopped (enabled: false)", 1)
    if not old.enabled:
        return _started(new, trades)
    if not trades:
        return "restarted, holding nothing"
    if old.on_stop == "close":
        return f"restarted; on_stop close: closes {_holding(trades)}; the new process starts flat"
    return f"restarted; on_stop keep: {_holding(trades)} stay open, adopted by the new process"


def _real_money(
    old: Mapping[str, AccountSpec], new: Mapping[str, AccountSpec], path: object
) -> list[str]:
    """Accounts the edit makes livetrade (real money) under a supervisor without --live."""
    out = []
    for name, spec in sorted(new.items()):
        before = old.get(name)
        if not (spec.enabled and spec.is_live):
            continue
        if before is not None and before.enabled and before.is_live:
            continue  # live already (run with --live, or left out with --only)
        was = "not in the file" if before is None else f"runmode {before.runmode}"
        if before is not None and before.is_live:
            was = "enabled: false"
        out.append(
            f"{name}: runmode livetrade trades real money and this supervisor was started "
            f"without --live ({name} was {was}): put the old value back, or stop and "
            f"`multirun start {path} --live`"
        )
    return out


def account_fields(spec: AccountSpec) -> dict[str, Any]:
    """An account's effective values under their runner.yaml names (secrets kept as Secret)."""
    return {
        "user": spec.user,
        "api_key": spec.api_key,
        "accountid": spec.accountid,
        "runmode": spec.runmode,
        "strategy": spec.strategy,
        "instrument": spec.instrument,
        "volume": spec.volume,
        "interval": format_interval(spec.interval_s),
        "params": thaw(spec.params),
        "on_stop": spec.on_stop,
        "enabled": spec.enabled,
        "max_open_trades": spec.guardrails.max_open_trades,
        "max_orders_per_hour": spec.guardrails.max_orders_per_hour,
        "halt_after_failures": spec.guardrails.halt_after_failures,
        "tick_timeout": format_interval(spec.tick_timeout_s),
        # money limits and trading hours: a change restarts the worker, like any field
        # here; its trades (journal) and a journaled pause carry over to the new one
        "risk": None if spec.risk is None else spec.risk.describe(),
        "trading_hours": None if spec.trading_hours is None else spec.trading_hours.describe(),
    }


def account_changes(old: AccountSpec, new: AccountSpec) -> list[str]:
    """``'field: old -> new'`` for each effective field that differs (secrets: ``changed``)."""
    before, after = account_fields(old), account_fields(new)
    out = []
    for key, value in before.items():
        if value == after[key]:
            continue
        if isinstance(value, Secret) or isinstance(after[key], Secret):
            out.append(f"{key}: changed")
        else:
            out.append(f"{key}: {_show(value)} -> {_show(after[key])}")
    return out


def _refused(old: RunnerSpec, new: RunnerSpec) -> list[str]:
    pairs = {
        "state_dir": (str(old.state_dir), str(new.state_dir)),
        "server": (old.server, new.server),
        "version": (old.version, new.version),
        "metrics": (_listen(old), _listen(new)),
        "web": (_web(old), _web(new)),
        "tick_spread": (old.tick_spread_s, new.tick_spread_s),
    }
    return [
        f"{key}: {_show(a)} -> {_show(b)} cannot apply live ({REFUSED_SETTINGS[key]}): "
        "a full restart is needed (multirun stop, then multirun start)"
        for key, (a, b) in pairs.items()
        if a != b
    ]


def _rebound(
    old: Mapping[str, AccountSpec], new: Mapping[str, AccountSpec], held: Held, path: object
) -> list[str]:
    """One line per account holding trades whose server account the edit changes."""
    out = []
    for name in sorted(old.keys() & new.keys()):
        before, after = account_fields(old[name]), account_fields(new[name])
        edits = [f"{k} {before[k]} -> {after[k]}" for k in BINDING_FIELDS if before[k] != after[k]]
        trades = held(name) if edits else ()
        if trades:
            out.append(
                f"{name}: {', '.join(edits)} cannot apply while its journal holds "
                f"{len(trades)} trade(s) opened on the old account: {'; '.join(trades)}; "
                f"with the old value in the file, `multirun stop {path} {name}` then "
                f"`multirun close {path} {name}` first, then edit and reload"
            )
    return out


def _listen(runner: RunnerSpec) -> str | None:
    spec = runner.metrics
    return None if spec is None else f"{spec.host}:{spec.port}"


def _web(runner: RunnerSpec) -> dict[str, Any] | None:
    """The dashboard's settings (its token a Secret: compared, shown masked)."""
    spec = runner.web
    if spec is None:
        return None
    return {"listen": spec.listen, "read_only": spec.read_only, "token": spec.token}


def _day_start(old: RunnerSpec, new: RunnerSpec) -> list[str]:
    """``risk.day_starts`` changed: every worker counts its day from it (restarted)."""
    before, after = str(old.day_starts), str(new.day_starts)
    return [] if before == after else [f"risk.day_starts: {_show(before)} -> {_show(after)}"]


def _file_risk(runner: RunnerSpec) -> str | None:
    """The file-level limits the supervisor applies (day_starts aside: see _day_start)."""
    return None if runner.risk is None else runner.risk.describe()


def _live_settings(old: RunnerSpec, new: RunnerSpec) -> list[str]:
    pairs = {
        "risk": (_file_risk(old), _file_risk(new)),
        "stop_timeout": (old.stop_timeout_s, new.stop_timeout_s),
        "watchdog_timeout": (
            format_interval(old.watchdog_timeout_s),
            format_interval(new.watchdog_timeout_s),
        ),
    }
    return [f"{key}: {_show(a)} -> {_show(b)}" for key, (a, b) in pairs.items() if a != b]


def _show(value: Any) -> str:
    """One value, compact and masked (a URL's or a param's ``api_key=`` never shows)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return mask_fields(text)
