"""multirun: run one trading strategy per ALGOGENE account from one runner.yaml.

Data flows one way: ``config`` (runner.yaml -> validated specs) -> ``supervisor``
(one process per account) -> ``worker`` (ticks, strategy, journal) -> ``client``
(ALGOGENE REST) -> the server, real or ``multirun.sim``.
"""

__version__ = "0.1.0"
