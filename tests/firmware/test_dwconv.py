"""``plan_dwconv`` / ``dwconv_bands``: every 3 x 3 depthwise layer of kws01 and vww01 planned for the default 16 x 16
datapath (bands that fit half the scratchpad, padding masked or written into the tile) and run through a
command-level model of ``DWCONV`` (what the RTL computes, see ``docs/datapath.md``) equals the golden interpreter.
The RTL itself runs one of these layers in ``tests/rtl/test_datapath_depthwise.py``."""

from pathlib import Path

import numpy as np
import pytest

from haneul.firmware import tflite
from haneul.firmware.dwconv import DwconvError, dwconv_bands, plan_dwconv
from haneul.firmware.ir import OpType
from haneul.rtl.commands import CommandFormat, Dwconv
from haneul.rtl.config import DatapathConfig
from haneul.sim import golden
from haneul.sim.golden import kernels
from haneul.sim.golden.params import prepare

MODELS = Path(__file__).resolve().parents[2] / "models" / "mlperf_tiny"
CONFIG = DatapathConfig()


def run_dwconv(cmd, spad, beat, rows):
    """What one ``DWCONV`` sends on ``out`` (lanes ``0 .. rows - 1``), from the scratchpad ``spad`` (line -> values)
    and the requantiser's parameter beat."""
    tile = np.array([spad[cmd.act_addr + n] for n in range(cmd.height * cmd.width)], dtype=np.int64)
    tile = tile.reshape(cmd.height, cmd.width, rows) - cmd.zero_point
    (pt, pb), (pl, pr) = cmd.padding
    padded = np.pad(tile, ((pt, pb), (pl, pr), (0, 0)))          # the masked taps add 0
    weights = np.array([spad[cmd.weight_addr + t] for t in range(9)], dtype=np.int64)
    oh, ow = cmd.output_size
    s = cmd.stride
    acc = np.zeros((oh, ow, rows), dtype=np.int64)
    for t in range(9):
        i, j = divmod(t, 3)
        acc += padded[i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s] * weights[t]
    lanes = beat["lanes"][:rows]
    config = beat["config"]
    bias = np.array([lane["bias"] for lane in lanes])
    out = kernels.requantize(acc + bias, np.array([lane["multiplier"] for lane in lanes]),
                             np.array([lane["shift"] for lane in lanes]), config["output_offset"],
                             config["act_min"], config["act_max"])
    return out.reshape(-1, rows)


def depthwise_layers(name):
    graph = tflite.load(next(MODELS.glob(f"{name}_*.tflite")))
    x = np.random.default_rng(1).integers(-128, 128, graph.inputs[0].shape).astype(np.int8)
    _, values = golden.run(graph, [x], intermediates=True)
    for op in graph.operators:
        if op.type is OpType.DEPTHWISE_CONV_2D:
            yield op, prepare(op), values[op.inputs[0].index], values[op.outputs[0].index]


@pytest.mark.parametrize("model", ["kws01", "vww01"])
@pytest.mark.parametrize("prepadded", [False, True])
def test_model_layers(model, prepadded):
    fmt = CommandFormat(CONFIG)
    half = CONFIG.spad_depth // 2
    layers = list(depthwise_layers(model))
    assert layers
    for op, p, x, expected in layers:
        _, h, w, c = x.shape
        filters, bias = op.inputs[1].data, op.inputs[2].data
        assert filters.shape[1:3] == (3, 3) and p.depth_multiplier == 1 and p.dilation == (1, 1)
        bands = dwconv_bands(h, w, c, p.stride[0], p.padding, CONFIG, half, prepadded=prepadded)
        rows_out = []
        for n, band in enumerate(bands):
            plan = plan_dwconv(h, w, c, p.stride[0], p.padding, CONFIG, zero_point=-p.input_offset,
                               a_base=(n % 2) * half, out_rows=band, prepadded=prepadded)
            assert plan.lines <= half
            spad = dict(plan.activation_lines(x) + plan.weight_lines(filters))
            beats = plan.param_beats(bias, p.output_multiplier, p.output_shift, p.output_offset, p.act_min,
                                     p.act_max)
            lines = []
            for cmd, beat in zip(plan.commands, beats):
                assert fmt.decode(fmt.encode(cmd)) == cmd                  # legal, and it fits the word
                out = run_dwconv(cmd, spad, beat, CONFIG.rows)
                lines += [np.pad(line, (0, CONFIG.cols - CONFIG.rows)) for line in out]
            rows_out.append(plan.assemble(lines))
        got = np.concatenate(rows_out)
        assert np.array_equal(got, expected[0]), f"{op.describe()}: {np.count_nonzero(got != expected[0])} differ"


def test_plan_errors():
    with pytest.raises(DwconvError, match="stride 1 or 2"):
        plan_dwconv(8, 8, 16, 3, ((1, 1), (1, 1)), CONFIG, zero_point=0)
    with pytest.raises(DwconvError, match="at most one pixel of padding"):
        plan_dwconv(8, 8, 16, 1, ((2, 2), (1, 1)), CONFIG, zero_point=0)
    with pytest.raises(DwconvError, match="larger than 255 x 255"):
        plan_dwconv(300, 3, 16, 1, ((0, 0), (0, 0)), CONFIG, zero_point=0)
    with pytest.raises(DwconvError, match="past the end of the scratchpad"):
        plan_dwconv(48, 48, 8, 1, ((1, 1), (1, 1)), CONFIG, zero_point=0)
    with pytest.raises(DwconvError, match="One output row"):
        dwconv_bands(8, 200, 64, 1, ((1, 1), (1, 1)), CONFIG, 1024)
    # The TFLite padding below the last row is not needed by any window of 5 rows at stride 2: no pad_bottom.
    plan = plan_dwconv(5, 4, 20, 2, ((0, 1), (1, 1)), CONFIG, zero_point=-3)
    assert plan.commands[1] == Dwconv(act_addr=20, weight_addr=49, height=5, width=4, stride2=True, pad_top=0,
                                      pad_bottom=0, pad_left=1, pad_right=1, zero_point=-3, load_params=True)
    with pytest.raises(DwconvError, match="Expected 8 output lines"):
        plan.assemble([[0] * 16])
