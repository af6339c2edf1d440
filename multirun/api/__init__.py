"""The ALGOGENE REST API for one account, as a client.

Typed calls (``client``; replies in ``models``, parameters checked in ``params``) over a
transport (``transport``, ``http_session``, a total deadline per request in
``request_deadline``) with a session token per account (``tokens``); an order placed at
most once (``placing``) and closes confirmed (``confirm``, paced by ``polls``). May import
``core`` only: it knows nothing of runner.yaml, journals or processes.
"""
