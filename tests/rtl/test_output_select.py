# amaranth: UnusedElaboratable=no
"""OutputSelect (rtl/output_select.py): runs from randomly selected sources with random valid and ready gaps.

The contract: the lines taken from the selected source leave on ``o`` once and in order; a source that is not
selected never sees ``ready``; ``busy`` stays high until the last line taken is on ``o`` and taken; with no gaps a
line passes every cycle and reaches ``o`` :attr:`OutputSelect.LATENCY` cycles after it was taken; a stalled ``o``
holds every source after ``depth`` lines in flight, and nothing is lost.
"""

import pytest
from amaranth.sim import Simulator

from haneul.rtl.output_select import OutputSelect


def run(dut, runs, valid_gap, ready_gap, rng, *, max_cycles=20000):
    """Play ``runs`` (a list of ``(source, lines)``) through ``dut``; return the lines on ``o``, the errors seen and
    the cycle (taken, sent) of every line."""
    got, errors, times = [], [], []

    async def tb(ctx):
        pending = []            # lines of the current run not yet taken
        offering = [False] * len(dut.i)
        run_index, selected, settle, previous = 0, None, 0, None
        taken_at = {}
        for cycle in range(max_cycles):
            busy = ctx.get(dut.busy)
            if not pending and run_index < len(runs) and not busy and not any(offering):
                source, lines = runs[run_index]
                run_index += 1
                previous, selected, pending, settle = selected, source, list(lines), 2
                ctx.set(dut.select, 1 << source)
            elif run_index == len(runs) and not pending and not busy and len(got) == sum(len(r[1]) for r in runs):
                break
            # Sources: the selected one offers its next line (held until taken) after the select has settled.
            for k, port in enumerate(dut.i):
                # The select takes effect a cycle late: in the cycle it changes, the previous source may see ready.
                if ctx.get(port.ready) and k != selected and not (settle == 2 and k == previous):
                    errors.append((cycle, "ready to an unselected source", k))
                if k == selected and pending and settle == 0 and (offering[k] or rng.random() >= valid_gap):
                    offering[k] = True
                    ctx.set(port.valid, 1)
                    ctx.set(port.payload, pending[0])
                else:
                    ctx.set(port.valid, 0)
                    ctx.set(port.payload, int(rng.integers(0, 1 << 16)))   # garbage between lines
            settle = max(0, settle - 1)
            ready = rng.random() >= ready_gap
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)
            if ctx.get(dut.o.valid) and ready:
                line = ctx.get(dut.o.payload)
                got.append(line)
                times.append((taken_at.pop(line, None), cycle))
            if selected is not None and offering[selected] and ctx.get(dut.i[selected].ready):
                taken_at[pending[0]] = cycle
                pending.pop(0)
                offering[selected] = False
            await ctx.tick()
        else:
            errors.append(("timeout", len(got)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return got, errors, times


def make_runs(rng, sources, count):
    runs, serial = [], 0
    for _ in range(count):
        length = int(rng.integers(1, 40))
        runs.append((int(rng.integers(0, sources)), [serial + j for j in range(length)]))
        serial += length
    return runs


@pytest.mark.parametrize("sources, depth, valid_gap, ready_gap", [
    (3, 8, 0.0, 0.0), (3, 8, 0.3, 0.5), (3, 5, 0.1, 0.7), (2, 5, 0.6, 0.2), (1, 8, 0.4, 0.4), (4, 6, 0.0, 0.9),
])
def test_output_select_random(rng, sources, depth, valid_gap, ready_gap):
    dut = OutputSelect(16, sources, depth=depth)
    runs = make_runs(rng, sources, 12)
    got, errors, _ = run(dut, runs, valid_gap, ready_gap, rng)
    assert not errors, f"first errors: {errors[:5]}"
    assert got == [line for _, lines in runs for line in lines]


def test_output_select_full_rate(rng):
    """Without gaps a line passes every cycle, LATENCY cycles after it is taken."""
    dut = OutputSelect(16, 3, depth=5)
    runs = [(1, list(range(100)))]
    got, errors, times = run(dut, runs, 0.0, 0.0, rng)
    assert not errors and got == list(range(100))
    assert all(sent - taken == OutputSelect.LATENCY for taken, sent in times)
    assert [sent for _, sent in times] == list(range(times[0][1], times[0][1] + 100))


def test_output_select_stalled_output_holds_sources(rng):
    """With ``o.ready`` low the selected source gets exactly ``depth`` lines plus the two the slice holds taken."""
    depth = 6
    dut = OutputSelect(16, 2, depth=depth)
    taken = []

    async def tb(ctx):
        ctx.set(dut.select, 0b10)
        await ctx.tick()
        ctx.set(dut.i[1].valid, 1)
        for cycle in range(60):
            ctx.set(dut.i[1].payload, len(taken))
            await ctx.delay(1e-9)
            if ctx.get(dut.i[1].ready):
                taken.append(cycle)
            assert not ctx.get(dut.i[0].ready)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert len(taken) == depth + 2


@pytest.mark.parametrize("sources, depth", [(0, 8), (2, 4), (True, 8), (2, 5.0)])
def test_output_select_rejects_bad_parameters(sources, depth):
    with pytest.raises(ValueError, match="Source count|Depth"):
        OutputSelect(8, sources, depth=depth)
