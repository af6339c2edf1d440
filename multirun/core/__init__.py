"""The core: what every layer shares and nothing else provides.

Exceptions and exit codes (``errors``), the clock (``clock``), secret masking
(``redact``), process and account states (``states``), the state directory's layout
(``statedir``) and the shapes of the files in it (``statefiles``; the mapped file of
numbers a worker's counters live in: ``slotfile``), file locks (``locks``) and small
POSIX process helpers (``procutil``). Imports only the standard
library: every other package may import it, it imports none of them.
"""
