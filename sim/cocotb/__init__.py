"""Reusable cocotb testbench parts for Haneul's Amaranth RTL (see ``docs/verification.md``).

Modules
-------
:mod:`.runner`
    ``run(component, simulator=..., build_name=..., test_module=..., params=...)``: Amaranth -> Verilog -> Icarus or
    Verilator build (cached, one directory per design, configuration and simulator) -> cocotb -> pytest verdict.
:mod:`.payload`
    ``Codec(layout)``: packs dicts/lists/ints into the flat ``<port>__payload`` vectors and back, using the Amaranth
    layout's field offsets; ``payload_shape(component, port)``.
:mod:`.streams`
    ``StreamDriver`` (drives ``valid``/``payload`` of an input stream, with an idle inserter) and ``StreamMonitor``
    (drives ``ready`` of an output stream with a backpressure inserter, decodes beats, checks the valid/ready
    protocol).
:mod:`.pauses`
    Pause generators for the inserters: ``random_pauses``, ``bursts``, ``pattern``, ``never``; ``TRAFFIC`` presets.
:mod:`.scoreboard`
    ``Scoreboard``: in-order comparison against a reference model, counting every match.

The submodules that use cocotb (``streams``, ``scoreboard``) are only imported inside a simulation; this package
itself imports nothing heavy, so the pytest side can use :mod:`.runner` freely.
"""

import json
import os

__all__ = ["PARAMS_ENV", "tb_params"]

#: Environment variable carrying the ``params`` of :func:`haneul.sim.cocotb.runner.run` as JSON.
PARAMS_ENV = "HANEUL_COCOTB_PARAMS"


def tb_params():
    """The ``params`` dict given to :func:`haneul.sim.cocotb.runner.run`, inside the cocotb test module."""
    return json.loads(os.environ.get(PARAMS_ENV, "{}"))


