"""``python -m multirun``: the same as the ``multirun`` command."""

from multirun.cli import main

main()
