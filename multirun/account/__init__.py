"""One account as a process: the worker that trades it and what it keeps.

The process entry (``process``), the tick loop (``worker``, timed by ``ticker`` and
``alarm``), its decisions turned into orders (``orders_plan``, ``guardrails``), prices and
P&L (``pricing``), money limits and trading hours (``risk``, ``trading_hours``), start-up
and per-tick reconciliation with the server (``reconcile``), ``on_stop`` (``on_stop``),
one trader per account (``ownership``), what it tells the supervisor (``status_file``,
``telemetry``), the supervisor's commands to it (``commands``: pause, resume, flatten),
its durable memory (``journal``) and what a stop left in it (``final_report``, read by
the supervisor, ``status`` and alerts). May import ``core``, ``config.specs``, ``api``
and ``strategies``; never the supervisor.
"""
