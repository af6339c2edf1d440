"""runner.yaml in, typed immutable specs out.

Loading (``yamlload``: located YAML; ``interpolate``: environment variables; ``schema``:
the JSON Schema and its defaults), checking (``loader``, ``settings_checks``,
``strategy_checks``; every finding located and worded in ``findings``), the specs the rest
of multirun consumes (``specs``), and the diff of a running spec and an edited file
(``reload_diff``). May import ``core`` and ``strategies`` (to check a strategy's
parameters); nothing above it.
"""
