"""The ``multirun`` command line: the only package that imports typer.

``app`` declares the commands, ``args`` their shared argument types,
``supervisor_commands`` the ones that act on a supervisor, ``validate`` what
``validate`` and ``schema`` print. Thin: each command parses, calls one function of the
library and maps its errors to an exit code.
"""
