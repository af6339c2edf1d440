"""Operator commands that read or act on a running (or stopped) fleet.

``status``, ``health``, the merged ``logs_view``, finding the supervisor from a possibly
broken runner.yaml (``locate``), talking to it (``control_client``), closing an account's
journaled trades without its strategy (``close``) and checking accounts against the
server before a start (``online_check``), and ``stop`` (SIGTERM the supervisor, wait,
print its final report). May import every layer below ``cli``.
"""
