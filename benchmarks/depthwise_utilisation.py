"""Cycles and MAC utilisation of every DEPTHWISE_CONV_2D layer of kws01, vww01 and sww01: systolic array vs the
depthwise vector unit.

This is a MODEL OF THE HARDWARE'S SCHEDULE, not a simulation: it counts the cycles each mapping needs from the layer
geometry, the unit's parameters and the scratchpad's read bandwidth (see ``docs/depthwise.md`` for the derivation).
It runs in a second::

    python benchmarks/depthwise_utilisation.py
    python benchmarks/depthwise_utilisation.py --lanes 16 --taps 9 --ports 2

Mappings (per layer; C channels, K = KH * KW taps, OH x OW outputs, G = ceil(C / lanes) channel groups):

``array``
    The naive mapping on the ``rows x cols`` weight-stationary array: one channel per column, its taps in rows
    (``floor(rows / K)`` channels block-diagonally when several fit, ``ceil(K / rows)`` K tiles when none does).
    The array broadcasts an activation element along its row, so one activation vector serves only the channels
    whose taps it carries: ``OH * OW`` vectors per weight tile, a tile lasting ``max(OH * OW, rows + 1)`` cycles
    (``docs/systolic.md``). Optimistic: building those per-channel vectors from pixel-major scratchpad lines is not
    counted.
``array (diagonal)``
    The best array mapping without new hardware: one weight tile per tap, ``diag(w[t])`` for ``cols`` channels, fed
    with plain scratchpad lines (the input pixel under tap ``t`` for each output pixel); the K taps add up in the
    accumulator SRAM (``accumulate`` beats), the input offset folds into the bias and padding needs materialised
    zero-point lines. ``cols`` of the ``rows x cols`` MACs do useful work: at most ``1 / rows`` utilisation.
``unit (no reuse)``
    The vector unit, every window gathered from the scratchpad on its own: each in-image tap is one line read.
``unit + WindowBuffer``
    The vector unit behind the 3 x 3 sliding-window buffer (built in ``rtl/depthwise.py``): a stride-1 output reads
    one new column (KH lines); 1-D kernels of at most 3 taps use it transposed. Larger kernels fall back to no reuse.
``unit + line buffer``
    A projection (not built): a 2-D line buffer that reads every input line once per channel group.

For the unit, a channel group takes ``max(compute, columns, reads / ports)`` cycles, where ``compute = OH * OW *
ceil(K / taps)`` window beats, ``columns`` the WindowBuffer's one column per cycle, and ``reads`` the activation
lines plus the group's K weight lines shared by the ``ports`` scratchpad read ports (1 line each per cycle,
conflict-free with the checkerboard bank placement). Plus one cycle per group for the weight-set swap (the
requantiser's parameter beat at the same group boundary overlaps it), and per layer the first weight set and the
pipeline fill (scratchpad 1 + buffer 1 + unit 5 + requantiser 9).
"""

import argparse
import sys
from dataclasses import dataclass
from math import ceil
from pathlib import Path

from haneul.firmware import tflite
from haneul.firmware.ir import OpType
from haneul.rtl.config import DatapathConfig
from haneul.rtl.depthwise import column_schedule
from haneul.rtl.ppu import Requantizer
from haneul.sim.golden.params import prepare

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "kws01": "kws01_dscnn_speechcommands_int8.tflite",
    "vww01": "vww01_mobilenetv1_025_96x96_int8.tflite",
    "sww01": "sww01_streaming_wakeword_int8.tflite",
}
MAPPINGS = ["array", "array (diagonal)", "unit (no reuse)", "unit + WindowBuffer", "unit + line buffer"]

REQUANTIZER_LATENCY = Requantizer.LATENCY   # defined once, in the RTL
SCRATCHPAD_LATENCY = 1
BUFFER_LATENCY = 1


@dataclass(frozen=True)
class Layer:
    model: str
    index: int
    h: int
    w: int
    c: int
    kh: int
    kw: int
    stride: tuple
    padding: tuple
    oh: int
    ow: int
    macs: int

    @property
    def taps(self):
        return self.kh * self.kw

    def label(self):
        s = f"{self.stride[0]}" if self.stride[0] == self.stride[1] else f"{self.stride[0]}x{self.stride[1]}"
        return f"{self.model} #{self.index}: {self.h}x{self.w}x{self.c} k{self.kh}x{self.kw} s{s}"


def depthwise_layers(model):
    graph = tflite.load(ROOT / "models" / "mlperf_tiny" / MODELS[model])
    layers = []
    for op in graph.operators:
        if op.type is not OpType.DEPTHWISE_CONV_2D:
            continue
        x, w = op.inputs[0], op.inputs[1]
        p = prepare(op)
        if p.depth_multiplier != 1 or p.dilation != (1, 1):
            raise SystemExit(f"{model} #{op.index}: depth multiplier / dilation not modelled")
        layers.append(Layer(model, op.index, x.shape[1], x.shape[2], x.shape[3], w.shape[1], w.shape[2], p.stride,
                            p.padding, p.output_size[0], p.output_size[1], op.macs))
    return layers


# Cycle models ------------------------------------------------------------------------------------------------------

def array_cycles(layer, config):
    """Naive mapping on the systolic array: block-diagonal channels, one activation vector per pixel and tile."""
    rows = config.rows
    k = layer.taps
    per_vector = max(1, rows // k)                 # channels one weight tile (and one vector) serves
    k_tiles = ceil(k / rows)
    tiles = ceil(layer.c / per_vector) * k_tiles
    m = layer.oh * layer.ow
    return rows + tiles * max(m, rows + 1) + config.latency


def diagonal_cycles(layer, config):
    """One ``diag(w[t])`` weight tile per tap and ``cols`` channels; one scratchpad line per activation vector."""
    tiles = ceil(layer.c / config.cols) * layer.taps
    m = layer.oh * layer.ow
    return config.rows + tiles * max(m, config.rows + 1) + config.latency


def window_reads(layer):
    """Scratchpad lines read when every window is gathered on its own (in-image taps only)."""
    (pt, _), (pl, _) = layer.padding
    sh, sw = layer.stride
    rows_in = [sum(0 <= r * sh - pt + i < layer.h for i in range(layer.kh)) for r in range(layer.oh)]
    cols_in = [sum(0 <= q * sw - pl + j < layer.w for j in range(layer.kw)) for q in range(layer.ow)]
    return sum(rows_in) * sum(cols_in)


def buffer_plan(layer, buffer):
    """(column beats, lines read) per channel group through a ``buffer = (kh, kw)`` WindowBuffer, or None when the
    kernel does not fit (1-D kernels along H are run transposed)."""
    bkh, bkw = buffer
    geom = ((layer.h, layer.w), (layer.kh, layer.kw), layer.stride, layer.padding, (layer.oh, layer.ow))
    if layer.w == 1 and layer.kw == 1 and layer.kh <= bkw:
        # a 1-D signal along H: transposed, the window slides along the buffer's columns (one line per column)
        (h, w), (kh, kw), (sh, sw), (ph, pw), (oh, ow) = geom
        plan = column_schedule((w, h), (kw, kh), (sw, sh), (pw, ph), (ow, oh))
    elif layer.kh <= bkh and layer.kw <= bkw:
        plan = column_schedule(*geom)
    else:
        return None
    columns = [c for _, row in plan for c in row]
    return len(columns), sum(c.reads for c in columns)


def unit_cycles(layer, mapping, *, lanes, taps, passes, ports, buffer=(3, 3), unit_latency=None):
    k = layer.taps
    beats = ceil(k / taps)
    if passes is not None and beats > passes:
        raise SystemExit(f"{layer.label()}: {k} taps need {beats} passes, the unit holds {passes}")
    groups = ceil(layer.c / lanes)
    compute = layer.oh * layer.ow * beats
    columns = 0
    if mapping == "unit (no reuse)":
        reads = window_reads(layer)
    elif mapping == "unit + WindowBuffer":
        plan = buffer_plan(layer, buffer)
        if plan is None:
            reads = window_reads(layer)
        else:
            columns, reads = plan
    elif mapping == "unit + line buffer":
        reads = layer.h * layer.w
    else:
        raise ValueError(mapping)
    per_group = max(compute, columns, ceil((reads + k) / ports)) + 1
    if unit_latency is None:
        unit_latency = 3 + ceil((taps - 1).bit_length() / 2)     # DepthwiseUnit.latency
    fill = ceil(k / ports) + SCRATCHPAD_LATENCY + BUFFER_LATENCY + unit_latency + REQUANTIZER_LATENCY
    return groups * per_group + fill


# Report --------------------------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lanes", type=int, default=DatapathConfig().cols, help="unit lanes (default: cols, 16)")
    parser.add_argument("--taps", type=int, default=DatapathConfig().dw_taps,
                        help=f"multipliers per lane (default: dw_taps, {DatapathConfig().dw_taps})")
    parser.add_argument("--passes", type=int, default=None,
                        help="passes the weight set holds (default: as many as each kernel needs)")
    parser.add_argument("--ports", type=int, default=2, help="scratchpad read ports for the unit (default 2)")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)

    config = DatapathConfig()
    unit_peak = args.lanes * args.taps
    array_peak = config.macs_per_cycle
    print(f"MODEL of the schedule (no RTL simulation). Array {config.rows}x{config.cols} = {array_peak} MACs/cycle; "
          f"unit {args.lanes} lanes x {args.taps} taps = {unit_peak} MACs/cycle; {args.ports} scratchpad read "
          f"ports.")
    print("Each cell: cycles / utilisation of the unit's peak / utilisation of the array's peak "
          "(the array columns: of its own 256).")
    head = f"{'layer':36s} {'MACs':>8s}"
    for name in MAPPINGS:
        head += f" | {name:>24s}"
    print(head)
    print("-" * len(head))
    totals = {}
    for model in args.models:
        sums = dict.fromkeys(MAPPINGS, 0)
        macs = 0
        for layer in depthwise_layers(model):
            cells = {"array": array_cycles(layer, config), "array (diagonal)": diagonal_cycles(layer, config)}
            for name in MAPPINGS[2:]:
                cells[name] = unit_cycles(layer, name, lanes=args.lanes, taps=args.taps, passes=args.passes,
                                          ports=args.ports)
            line = f"{layer.label():36s} {layer.macs:8d}"
            for name in MAPPINGS:
                cyc = cells[name]
                sums[name] += cyc
                if name.startswith("array"):
                    line += f" | {cyc:9d} {'':6s} {100 * layer.macs / (cyc * array_peak):5.1f} %"
                else:
                    line += (f" | {cyc:7d} {100 * layer.macs / (cyc * unit_peak):5.1f} % "
                             f"{100 * layer.macs / (cyc * array_peak):5.1f} %")
            macs += layer.macs
            print(line)
        line = f"{model + ' total':36s} {macs:8d}"
        for name in MAPPINGS:
            cyc = sums[name]
            if name.startswith("array"):
                line += f" | {cyc:9d} {'':6s} {100 * macs / (cyc * array_peak):5.1f} %"
            else:
                line += (f" | {cyc:7d} {100 * macs / (cyc * unit_peak):5.1f} % "
                         f"{100 * macs / (cyc * array_peak):5.1f} %")
        print(line)
        print("-" * len(head))
        totals[model] = (macs, sums)
    for base in ("array", "array (diagonal)"):
        print(f"Speed-up of unit + WindowBuffer over {base}: " + ", ".join(
            f"{model} {sums[base] / sums['unit + WindowBuffer']:.1f}x" for model, (_, sums) in totals.items()))
    return totals


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
