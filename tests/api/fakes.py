"""A fake :class:`~multirun.api.transport.Transport` for unit tests: canned replies, no HTTP.

Like httpx's ``MockTransport``: a handler turns each :class:`Request` into a
:class:`RawReply` (or raises the NetworkError a dropped connection would), and every
request is recorded. The client above it is the real one: decoding, error mapping,
retries, token handling and the orderRef search all run as in production.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from multirun.api.transport import RawReply, Request

Handler = Callable[[Request], RawReply]


def reply(body: object, status: int = 200) -> RawReply:
    """A reply whose body is ``body`` as JSON."""
    return RawReply(status, json.dumps(body).encode())


class MockTransport:
    """Sends nothing: ``handler`` answers each request; :attr:`requests` records them."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.closed = False

    def handle(self, request: Request) -> RawReply:
        self.requests.append(request)
        return self.handler(request)

    def close(self) -> None:
        self.closed = True

    def sent(self, endpoint: str) -> list[dict[str, Any]]:
        """The payloads of the requests made to ``endpoint``, in order."""
        return [r.payload for r in self.requests if r.endpoint == endpoint]


class Routes:
    """A handler answering by endpoint: each a canned body, or a function of the request
    (to count calls, change answers over time, or raise a NetworkError)."""

    def __init__(self, **routes: object) -> None:
        self.routes = routes

    def __call__(self, request: Request) -> RawReply:
        route = self.routes.get(request.endpoint)
        if route is None:
            return reply({"status": "FAIL", "err_msg": f"no route {request.endpoint}"}, 404)
        if callable(route):
            answer = route(request)
            return answer if isinstance(answer, RawReply) else reply(answer)
        return reply(route)
