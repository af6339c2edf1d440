"""Typed, immutable specs: what the rest of multirun consumes after ``config``.

Nothing downstream of :mod:`multirun.config.loader` reads raw YAML dicts; it reads these.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from multirun.config import schema
from multirun.core.redact import Secret

RunMode = Literal["livetest", "livetrade"]
OnStop = Literal["close", "keep"]

SIM_SERVER = "sim"
# The supervisor's own children: no account may take one of these names.
SERVICE_NAMES = ("sim", "metrics", "notify", "web")

# Every default is the schema's: written there once, and shown in the README from there.
_RUNNER_DEFAULTS = schema.runner_defaults()
_ACCOUNT_DEFAULTS = schema.account_defaults()


def freeze(value: Any) -> Any:
    """A read-only deep copy of a JSON-like value (mappings and lists)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable copy of a value made by :func:`freeze` (for jsonschema, JSON)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


_INTERVAL = re.compile(r"^([1-9][0-9]*)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# The schema's bound on whole seconds (7 days), which holds for a duration string too.
# Far beyond any trading use, and far below what the worker's clock can represent: an
# interval of 10**20 seconds validated, then crashed every worker at its first tick.
MAX_INTERVAL_S = int(
    next(
        form["maximum"]
        for form in schema.account_fields()["interval"]["anyOf"]
        if form.get("type") == "integer"
    )
)


def parse_interval(text: str | int | float) -> int:
    """Seconds in an interval: ``30s``, ``1m``, ``5m``, ``1h``, ``1d`` or whole seconds >= 1.

    At most :data:`MAX_INTERVAL_S`. ``5.0`` is 5: JSON Schema's integers include it.
    """
    if isinstance(text, bool) or (isinstance(text, float) and not text.is_integer()):
        raise ValueError("must be a duration like 30s, 1m, 1h, or whole seconds >= 1")
    if isinstance(text, int | float):
        seconds = int(text)
    else:
        match = _INTERVAL.match(str(text).strip())
        if not match:
            raise ValueError(f"invalid interval {text!r}: use 30s, 1m, 5m, 1h, 1d or whole seconds")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 1:
        raise ValueError("must be at least 1 second")
    if seconds > MAX_INTERVAL_S:
        raise ValueError(f"must be at most {format_interval(MAX_INTERVAL_S)} ({MAX_INTERVAL_S} s)")
    return seconds


def format_interval(seconds: int) -> str:
    """The shortest way to write ``seconds`` as an interval (``60`` -> ``1m``)."""
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Guardrails:
    """Per-account limits the worker enforces before sending any order."""

    max_open_trades: int = int(_ACCOUNT_DEFAULTS["max_open_trades"])
    max_orders_per_hour: int = int(_ACCOUNT_DEFAULTS["max_orders_per_hour"])
    halt_after_failures: int = int(_ACCOUNT_DEFAULTS["halt_after_failures"])
    max_volume: float | None = None  # no default: no limit on an order's volume

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Guardrails:
        """The guardrails of an account's merged values (the counts' defaults included)."""
        counts = {k: int(values[k]) for k in COUNT_GUARDRAILS}  # int(): JSON's 2.0 is 2
        limit = values.get("max_volume")
        return cls(**counts, max_volume=None if limit is None else float(limit))


# The guardrails that count (and have a default); ``max_volume`` is optional.
COUNT_GUARDRAILS = ("max_open_trades", "max_orders_per_hour", "halt_after_failures")


OnBreach = Literal["pause", "flatten"]
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # weekday() order
_CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
MIDNIGHT_END = 24 * 60  # ``to: "24:00"``: the window ends at midnight


def parse_clock_time(text: object, *, end: bool = False) -> int:
    """Minutes after midnight of ``HH:MM`` (``24:00`` too with ``end``); ValueError else.

    An unquoted ``16:30`` reaches here as the number 990 (YAML 1.1 reads it in base 60):
    the error says to quote it."""
    if isinstance(text, int) and not isinstance(text, bool):
        hours, minutes = divmod(text, 60)
        raise ValueError(
            f'quote the time ("{hours:02d}:{minutes:02d}"): unquoted, YAML reads it as '
            f"the number {text}"
        )
    value = str(text).strip()
    if end and value == "24:00":
        return MIDNIGHT_END
    match = _CLOCK_TIME.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a time of day: use HH:MM (00:00 to 23:59)")
    return int(match.group(1)) * 60 + int(match.group(2))


def parse_days(text: str) -> frozenset[int]:
    """Weekdays (0 = Monday) of ``mon-fri``, ``mon,wed,fri``, ``sat-sun,mon`` (a range may
    wrap: ``fri-mon``); ValueError naming what is not a day."""
    days: set[int] = set()
    for part in str(text).lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        for name in (first, last) if last else (first,):
            if name not in DAY_NAMES:
                raise ValueError(
                    f"{name or part!r} is not a day: use {', '.join(DAY_NAMES)}, "
                    "ranges like mon-fri, separated by commas"
                )
        start, stop = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        days.update((start + k) % 7 for k in range((stop - start) % 7 + 1))
    return frozenset(days)


@dataclass(frozen=True)
class DayStart:
    """When the trading day of ``max_daily_loss`` starts: minutes after midnight in ``tz``."""

    minutes: int = 0
    tz: str = "UTC"

    @classmethod
    def parse(cls, text: str) -> DayStart:
        """``HH:MM`` then an optional IANA time zone (UTC by default): ``17:00 America/New_York``.
        The zone's name is not looked up here (see :mod:`multirun.config.risk_checks`)."""
        clock, _, tz = str(text).strip().partition(" ")
        return cls(parse_clock_time(clock), tz.strip() or "UTC")

    def __str__(self) -> str:
        return f"{self.minutes // 60:02d}:{self.minutes % 60:02d} {self.tz}"

    @property
    def zone(self) -> tzinfo:
        """The day's time zone (UTC for a name this machine does not know: validate
        refuses one, so only a file edited under a running supervisor meets that)."""
        try:
            return ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo("UTC")

    def bounds(self, t: float) -> tuple[float, float]:
        """The start of the trading day holding ``t`` and the start of the next (Unix
        times): the one rule of the day's boundary, for each account and for the fleet."""
        zone = self.zone
        hours, minutes = divmod(self.minutes, 60)
        local = datetime.fromtimestamp(t, zone)
        start = local.replace(hour=hours, minute=minutes, second=0, microsecond=0)
        if start.timestamp() > t:
            start = _same_wall_time(start, -1, zone)
        return start.timestamp(), _same_wall_time(start, 1, zone).timestamp()

    def day_of(self, t: float) -> date:
        """The trading day ``t`` falls in, named by the calendar date its start has in
        the day's zone (``17:00 America/New_York``: 16:59 there is still the day before)."""
        return datetime.fromtimestamp(self.bounds(t)[0], self.zone).date()


def _same_wall_time(moment: datetime, days: int, zone: tzinfo) -> datetime:
    """The same wall-clock time ``days`` later in ``zone`` (a day of 23 or 25 hours)."""
    naive = moment.replace(tzinfo=None) + timedelta(days=days)
    return naive.replace(tzinfo=zone)


@dataclass(frozen=True)
class RiskSpec:
    """Money limits (``risk:``): of one account, or of the whole file (then with the day's
    start). An amount of None sets no limit."""

    max_daily_loss: float | None = None
    max_drawdown: float | None = None
    on_breach: OnBreach = "pause"
    day_starts: DayStart = field(default_factory=DayStart)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> RiskSpec:
        def amount(key: str) -> float | None:
            return None if values.get(key) is None else float(values[key])

        return cls(
            max_daily_loss=amount("max_daily_loss"),
            max_drawdown=amount("max_drawdown"),
            on_breach="flatten" if values.get("on_breach") == "flatten" else "pause",
            day_starts=DayStart.parse(values.get("day_starts") or "00:00 UTC"),
        )

    def describe(self) -> str:
        """``max_daily_loss 300, max_drawdown 600, on_breach pause`` (reload lines)."""
        parts = [
            f"{key} {value:g}"
            for key, value in (("max_daily_loss", self.max_daily_loss),
                               ("max_drawdown", self.max_drawdown))
            if value is not None
        ]  # fmt: skip
        return ", ".join([*parts, f"on_breach {self.on_breach}"])


@dataclass(frozen=True)
class TradingHours:
    """``trading_hours:``: the weekly window an account may trade in (see
    :mod:`multirun.account.trading_hours`). ``start``/``end``: minutes after midnight in
    ``tz``; ``overnight``: ``end`` is on the day after ``start`` (``days`` name the day
    the window opens)."""

    days: frozenset[int]
    start: int
    end: int
    tz: str = "UTC"
    overnight: bool = False
    flatten_at_end: bool = False

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> TradingHours:
        """The window of checked values (:mod:`multirun.config.risk_checks`)."""
        return cls(
            days=parse_days(values.get("days") or "mon-sun"),
            start=parse_clock_time(values["from"]),
            end=parse_clock_time(values["to"], end=True),
            tz=str(values.get("tz") or "UTC"),
            overnight=values.get("overnight") is True,
            flatten_at_end=values.get("flatten_at_end") is True,
        )

    def describe(self) -> str:
        """``mon-fri 08:00-16:30 Europe/London, flatten at end`` (reload lines, logs)."""
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        hours = f"{_hhmm(self.start)}-{_hhmm(self.end)}{' next day' if self.overnight else ''}"
        return f"{days} {hours} {self.tz}" + (", flatten at end" if self.flatten_at_end else "")


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True)
class AccountSpec:
    """One account of runner.yaml, defaults merged and environment interpolated."""

    name: str
    user: str
    api_key: Secret
    accountid: str
    runmode: RunMode
    strategy: str
    instrument: str
    volume: float
    interval_s: int
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    on_stop: OnStop = _ACCOUNT_DEFAULTS["on_stop"]
    enabled: bool = bool(_ACCOUNT_DEFAULTS["enabled"])
    guardrails: Guardrails = field(default_factory=Guardrails)
    tick_timeout_s: int = parse_interval(_ACCOUNT_DEFAULTS["tick_timeout"])
    risk: RiskSpec | None = None  # this account's money limits (``risk:``)
    trading_hours: TradingHours | None = None  # None: it may trade at any time

    @property
    def order_ref_prefix(self) -> str:
        """Every orderRef this account sends starts with this; nothing else is ours."""
        return f"mr-{self.name}-"

    @property
    def is_live(self) -> bool:
        return self.runmode == "livetrade"


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) as its host and a port up to 65535 (0: any
    free one); ValueError otherwise."""
    host, _, port_text = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    port = int(port_text) if port_text.isdigit() else -1
    if not host or not 0 <= port <= 65535:
        raise ValueError(f"listen {listen!r}: expected host:port, a port up to 65535")
    return host, port


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine (a host name may resolve to anything)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MetricsSpec:
    """``metrics:``: where the supervisor serves Prometheus' ``/metrics``."""

    host: str
    port: int
    allow_remote: bool = False

    @classmethod
    def parse(cls, listen: str, allow_remote: bool = False) -> MetricsSpec:
        """``host:port`` checked (:func:`split_listen`), and a host other than loopback
        only with ``allow_remote`` (ValueError otherwise)."""
        spec = cls(*split_listen(listen), allow_remote)
        if not spec.loopback and not allow_remote:
            raise ValueError(
                f"listen {listen!r} is not a loopback address: /metrics has no "
                "authentication; set allow_remote: true to serve it to other hosts"
            )
        return spec

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


@dataclass(frozen=True)
class WebSpec:
    """``web:``: where the dashboard is served, its access token, whether it may act."""

    host: str
    port: int
    token: Secret | None = None
    read_only: bool = False

    @classmethod
    def parse(
        cls, listen: str | None = None, token: str | None = None, read_only: bool = False
    ) -> WebSpec:
        """``host:port`` (the schema's default when None) checked (:func:`split_listen`);
        a host other than loopback only with a token: the page can close positions
        (ValueError otherwise)."""
        listen = str(schema.web_defaults()["listen"]) if listen is None else listen
        spec = cls(*split_listen(listen), Secret(token) if token else None, read_only)
        if not spec.loopback and spec.token is None:
            raise ValueError(
                f"listen {listen!r} is not a loopback address: the dashboard can stop "
                "accounts (and close their trades); set web.token: ${VAR} to serve it there"
            )
        return spec

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class NotifyTarget:
    """One ``notify:`` webhook: its URL (a secret: it may hold a token), format, events."""

    url: Secret
    format: str = "json"
    events: tuple[str, ...] = ()  # empty: every event

    def wants(self, event: str) -> bool:
        return not self.events or event in self.events


def _packed(names: list[str]) -> tuple[str, ...]:
    """Copies of ``names`` made one after the other, so that they share a few pages: each
    name as loaded sits beside its account's other values, a page of its own, which a
    worker reading them all (its peers' names) would copy after the fork."""
    if any("\0" in name for name in names):
        return tuple(names)
    return tuple("\0".join(names).split("\0"))


@dataclass(frozen=True)
class RunnerSpec:
    """A whole validated runner.yaml."""

    path: Path
    server: str
    state_dir: Path
    accounts: tuple[AccountSpec, ...]
    version: int = int(_RUNNER_DEFAULTS["version"])
    stop_timeout_s: float = float(_RUNNER_DEFAULTS["stop_timeout"])
    watchdog_timeout_s: int = parse_interval(_RUNNER_DEFAULTS["watchdog_timeout"])
    tick_spread_s: float = float(_RUNNER_DEFAULTS["tick_spread"])  # wake-ups spread below it
    notify: tuple[NotifyTarget, ...] = ()
    metrics: MetricsSpec | None = None  # off unless runner.yaml has `metrics:`
    web: WebSpec | None = None  # off unless runner.yaml has `web:`
    risk: RiskSpec | None = None  # the whole file's money limits (``risk:``)
    # Built once, where the file is loaded (the supervisor, before it forks): a worker
    # finding its own spec and its peers reads these, not every account's spec. Each spec
    # read after the fork is a page copied: at 500 accounts, scanning them all cost each
    # worker ~550 page faults and ~2 ms of CPU.
    _by_name: Mapping[str, AccountSpec] = field(init=False, repr=False, compare=False)
    _on_interval: Mapping[int, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, AccountSpec] = {}
        on_interval: dict[int, list[str]] = {}
        for spec in self.accounts:
            by_name.setdefault(spec.name, spec)  # the first of a name, as a scan finds
            if spec.enabled:
                on_interval.setdefault(spec.interval_s, []).append(spec.name)
        packed = {interval: _packed(names) for interval, names in on_interval.items()}
        object.__setattr__(self, "_by_name", MappingProxyType(by_name))
        object.__setattr__(self, "_on_interval", MappingProxyType(packed))

    @property
    def day_starts(self) -> DayStart:
        """When the trading day starts for every account (``risk.day_starts``)."""
        return self.risk.day_starts if self.risk is not None else DayStart()

    @property
    def uses_sim(self) -> bool:
        return self.server == SIM_SERVER

    @property
    def config_dir(self) -> Path:
        return self.path.parent

    def account(self, name: str) -> AccountSpec:
        return self._by_name[name]  # KeyError: no such account

    @property
    def enabled_accounts(self) -> tuple[AccountSpec, ...]:
        return tuple(a for a in self.accounts if a.enabled)

    def names_on_interval(self, interval_s: int) -> tuple[str, ...]:
        """The enabled accounts that tick every ``interval_s``: their wake-ups are spaced
        evenly (:func:`multirun.account.ticker.wake_offset`)."""
        return self._on_interval.get(interval_s, ())
