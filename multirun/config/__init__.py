"""runner.yaml in, typed immutable specs out.

Loading (``yamlload``: located YAML; ``interpolate``: environment variables; ``schema``:
the JSON Schema and its defaults), checking (``loader`` runs the pipeline over each
account's ``entry``; ``schema_errors``, ``settings_checks`` (with ``risk_checks``: money
limits and trading hours) and ``strategy_checks`` are functions it calls; every finding
located and worded in ``findings``), the specs the rest of multirun consumes (``specs``),
and the diff of a running spec and an edited file (``reload_diff``). Imports run one way:
the checks import ``entry`` and ``findings``, never ``loader``. May import ``core`` and
``strategies`` (to check a strategy's parameters); nothing above it.
"""
