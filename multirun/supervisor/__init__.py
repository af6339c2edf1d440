"""The supervisor: one process that starts, watches, restarts and stops the accounts.

``launch`` turns a runner spec into a running ``arbiter`` (the loop and the run's phases,
stopping included); each supervised child is a ``program`` (its process says what its
exit means: restart, FATAL, stopped), forked by ``fork``, its output read by ``pipes``
into ``output``; the heartbeat ``watchdog``, ``sweeps`` (on_stop for an account whose
worker is gone), the control socket (``control_server``, per-account requests in
``account_requests``) and the ``final_report`` of a stop. May import ``core``,
``config``, ``account`` (to run a worker in a child) and ``services``.
"""
