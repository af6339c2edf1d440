"""Delivery: one bounded queue and one sender thread per target, retries with backoff.

A slow or dead webhook holds up only its own thread: the watcher only appends to the
queues. A full queue drops its oldest message and counts it; the next message sent says
how many were dropped. A failed post (a timeout, a refused connection, a status other
than 2xx) is retried after 1, 2, 4 ... seconds, :data:`ATTEMPTS` times in all. No URL is
ever printed unmasked (:func:`multirun.core.redact.mask_url`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import requests

from multirun.config.specs import NotifyTarget
from multirun.core.redact import Redactor, mask_url, url_secrets
from multirun.services.notify import formats
from multirun.services.notify.events import Event

log = logging.getLogger("multirun.notify")

QUEUE_MAX = 100
ATTEMPTS = 4
BACKOFF_BASE_S = 1.0
TIMEOUT_S = (3.0, 5.0)  # connect, read


def redactor_for(targets: Sequence[NotifyTarget], secrets: Sequence[str] = ()) -> Redactor:
    """Masks the accounts' keys and every part of every target URL."""
    pieces = [p for t in targets for p in url_secrets(t.url.reveal())]
    return Redactor([*secrets, *pieces])


def post(target: NotifyTarget, payload: dict[str, object], timeout: tuple[float, float]) -> str:
    """One POST: ``""`` when it was taken (2xx), else why not (no URL in it)."""
    try:
        reply = requests.post(target.url.reveal(), json=payload, timeout=timeout)
    except requests.Timeout:
        return "timed out"
    except requests.RequestException as exc:
        return f"cannot connect ({type(exc).__name__})"
    reply.close()
    return "" if 200 <= reply.status_code < 300 else f"HTTP {reply.status_code}"


class Sender:
    """One target's queue and the thread that empties it."""

    def __init__(
        self,
        target: NotifyTarget,
        mask: Redactor,
        *,
        config: str = "",
        maxlen: int = QUEUE_MAX,
        attempts: int = ATTEMPTS,
        backoff_s: float = BACKOFF_BASE_S,
        timeout: tuple[float, float] = TIMEOUT_S,
    ) -> None:
        self.target, self.mask, self.config = target, mask, config
        self.shown = mask_url(target.url.reveal())
        self.queue: deque[Event] = deque()
        self.maxlen, self.attempts, self.backoff_s, self.timeout = (
            maxlen,
            attempts,
            backoff_s,
            timeout,
        )
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self.busy = False
        self.lock = threading.Condition()
        self.closing = threading.Event()  # no more retries: send what is queued, once
        self.thread = threading.Thread(target=self.run, name=f"notify {self.shown}", daemon=True)
        self.thread.start()

    def put(self, event: Event) -> None:
        with self.lock:
            if len(self.queue) >= self.maxlen:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append(event)
            self.lock.notify()

    def idle(self) -> bool:
        with self.lock:
            return not self.queue and not self.busy

    def run(self) -> None:
        while True:
            with self.lock:
                while not self.queue:
                    self.lock.wait()
                event = self.queue.popleft()
                dropped, self.dropped = self.dropped, 0
                self.busy = True
            try:
                self.deliver(event, dropped)
            except Exception as exc:  # never let the thread die: log (masked) and go on
                log.warning("notify %s: %s", self.shown, self.mask(repr(exc)))
            finally:
                with self.lock:
                    self.busy = False
                    self.lock.notify_all()

    def deliver(self, event: Event, dropped: int) -> None:
        payload = formats.body(
            self.target.format,
            event,
            self.mask,
            url=self.target.url.reveal(),
            config=self.config,
            dropped=dropped,
        )
        for attempt in range(1, self.attempts + 1):
            why = post(self.target, payload, self.timeout)
            if not why:
                self.sent += 1
                return
            last = attempt == self.attempts or self.closing.is_set()
            log.warning(
                "notify %s: %s %s (attempt %d)%s",
                self.shown,
                event.kind,
                why,
                attempt,
                "; giving up" if last else "; retrying",
            )
            if last:
                self.failed += 1
                return
            self.closing.wait(self.backoff_s * 2 ** (attempt - 1))


class Deliverer:
    """Every target's :class:`Sender`; events go to the targets that want them."""

    def __init__(self, senders: Sequence[Sender]) -> None:
        self.senders = list(senders)

    @classmethod
    def for_targets(
        cls, targets: Sequence[NotifyTarget], secrets: Sequence[str] = (), **kwargs: object
    ) -> Deliverer:
        mask = redactor_for(targets, secrets)
        return cls([Sender(t, mask, **kwargs) for t in targets])  # type: ignore[arg-type]

    def put(self, event: Event) -> None:
        for sender in self.senders:
            if sender.target.wants(event.kind):
                sender.put(event)

    def close(self, deadline_s: float, clock: Callable[[], float] = time.monotonic) -> bool:
        """Stop retrying, and wait up to ``deadline_s`` for the queues to empty (each message
        gets one more try). True when everything queued was tried."""
        for sender in self.senders:
            sender.closing.set()
        end = clock() + deadline_s
        for sender in self.senders:
            with sender.lock:
                while (sender.queue or sender.busy) and clock() < end:
                    sender.lock.wait(max(0.0, end - clock()))
        return all(s.idle() for s in self.senders)
