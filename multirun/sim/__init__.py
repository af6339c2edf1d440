"""``multirun sim``: a local simulator of the ALGOGENE REST API.

See docs/simulator.md for endpoints, controls and what it does not model.
"""

from multirun.sim.faults import FaultSettings
from multirun.sim.server import SimConfig, SimServer, serve

__all__ = ["FaultSettings", "SimConfig", "SimServer", "serve"]
