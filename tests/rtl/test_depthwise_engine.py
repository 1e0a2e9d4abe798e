# amaranth: UnusedElaboratable=no
"""DepthwiseEngine (rtl/depthwise_engine.py): whole layers bit-exact against numpy and the golden model under
random gaps on every stream, with the groups checked to be in lockstep in every cycle.
"""

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from haneul.rtl.config import DatapathConfig
from haneul.rtl.depthwise_engine import DepthwiseEngine

from .test_depthwise import TRAFFIC, check_layer, layer_column_beats, layer_testbenches, layer_weight_beats, \
    random_layer


def handshakes(dut, g):
    """The control signals of group ``g`` that must match every other group's in every cycle."""
    col, wgt, buf, unit = dut.column_slices[g], dut.weight_slices[g], dut.buffers[g], dut.units[g]
    return (col.i.ready, col.o.valid, col.busy, wgt.i.ready, wgt.o.valid, buf.window.valid, buf.window.ready,
            buf.window.payload.final, buf.window.payload.last, buf.window.payload.mask, unit.result.valid)


@pytest.mark.parametrize("lanes, group, taps, stride, same, traffic, mult",
                         [(6, 4, 3, 1, True, "gaps", "dsp"), (6, 4, 9, 2, True, "backpressure", "lut"),
                          (8, 4, 3, 2, False, "slow_weights", "dsp"), (5, 2, 5, 1, True, "gaps", "lut"),
                          (4, 4, 3, 1, False, "smooth", "dsp")])
def test_layer_vs_golden(lanes, group, taps, stride, same, traffic, mult, rng):
    """A 5 x 4 layer of 9 channels (channel groups of ``lanes``, the last one partial), 3 x 3 kernel, through the
    engine with lane groups of ``group`` (the last one narrower where ``group`` does not divide ``lanes``): the
    int32 sums match numpy exactly and, requantised by the golden model, ``kernels.depthwise_conv_2d``; all lane
    groups show the same handshakes in every cycle; ``busy`` falls at the end."""
    c = 9
    groups = -(-c // lanes)
    x, filters, bias, p, zp_in = random_layer(rng, 5, 4, c, (3, 3), stride, same)
    dut = DepthwiseEngine(DatapathConfig(), lanes=lanes, taps=taps, multiplier=mult, group=group)
    assert [n for _, n in dut.groups] == [min(group, lanes - first) for first in range(0, lanes, group)]
    columns = layer_column_beats(x, (3, 3), p, lanes, groups, rng)
    weights = layer_weight_beats(filters, zp_in, lanes, groups)
    count = groups * p.output_size[0] * p.output_size[1]
    got, skew = [], []
    weight_tb, column_tb, collect_tb = layer_testbenches(dut.weight, dut.column, dut.result, weights, columns,
                                                         count, lanes, rng, TRAFFIC[traffic], got)

    async def result_tb(ctx):
        await collect_tb(ctx)
        for _ in range(3):
            await ctx.tick()
        assert not ctx.get(dut.busy), "busy after the last result"

    async def lockstep_tb(ctx):
        reference = [handshakes(dut, g) for g in range(len(dut.groups))]
        while True:
            values = [[ctx.get(s) for s in signals] for signals in reference]
            if any(v != values[0] for v in values[1:]):
                skew.append(values)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in (weight_tb, column_tb, result_tb):
        sim.add_testbench(tb)
    sim.add_testbench(lockstep_tb, background=True)
    sim.run()
    assert not skew, f"lane groups out of step: {skew[:2]}"
    check_layer(got, lanes, groups, c, x, filters, bias, p, zp_in)


def test_defaults():
    """From the configuration: ``rows`` lanes in groups of 4, ``dw_taps`` taps, ``dw_passes`` beats per window."""
    cfg = DatapathConfig()
    dut = DepthwiseEngine(cfg)
    assert dut.groups == [(0, 4), (4, 4), (8, 4), (12, 4)]
    assert dut.taps == cfg.dw_taps and dut.passes == cfg.dw_passes
    assert dut.latency == dut.units[0].latency
    Fragment.get(dut, None)
    with pytest.raises(ValueError, match="Group size must be a positive integer"):
        DepthwiseEngine(cfg, group=0)
