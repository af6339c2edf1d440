"""The ALGOGENE REST API for one account, as a client.

Typed calls (``client``; replies in ``models``, parameters checked in ``params``) over a
``transport`` (a ``Transport`` protocol: ``HttpTransport`` on the network through
``http_session`` with a total deadline per request in ``request_deadline``, or a fake in
unit tests; ``RequestSender`` above it decodes replies, maps errors and retries reads)
with a session token per account (``tokens``); an order placed at most once
(``placing``) and closes confirmed (``confirm``, paced by ``polls``). May import
``core`` only: it knows nothing of runner.yaml, journals or processes.
"""
