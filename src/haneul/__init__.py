"""Haneul: an open-source edge NPU (Amaranth HDL) with its golden model, compiler and runtime.

Subpackages: :mod:`haneul.rtl` (gateware), :mod:`haneul.sim` (golden model and simulators),
:mod:`haneul.firmware` (model import, compiler, runtime), :mod:`haneul.boards` (FPGA boards).
"""

__version__ = "0.1.0"
