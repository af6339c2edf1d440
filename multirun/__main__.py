"""``python -m multirun``: the same as the ``multirun`` command."""

from multirun.cli.app import main

main()
