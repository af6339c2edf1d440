"""The supervisor: one process that starts, watches, restarts and stops the accounts.

``launch`` turns a runner spec into a running ``arbiter`` (the loop and the run's phases,
stopping included); each supervised child is a ``program`` (its process says what its exit
means: restart, FATAL, stopped), forked by ``fork``, its output read by ``pipes`` into
``output``; the heartbeat ``watchdog``, ``sweeps`` (on_stop for an account whose worker is
gone), the control socket (``control_server``, per-account requests in
``account_requests``, pause, resume and flatten in ``pause_requests``), the file-level
money limit summed from the workers' pipes (``fleet_risk``), what a stop finds that no
journal tells and its verdict (``stop_outcome``); and ``standalone``, what a supervisor's
service children do for one account run by an outside engine (``multirun run-account``
under systemd, Kubernetes, Compose); ``warmup``, one worker's code run before the forks
(so the workers share it warm). May import ``core``, ``config``, ``account`` (to run a
worker or a sweep in a child, and to read the ``final_report`` of what a stop left open),
``api`` and ``strategies`` (the warm-up's worker), ``services`` and ``sim`` (each run as a
service child, the simulator also by the warm-up); never ``ops`` or ``cli``.
"""
