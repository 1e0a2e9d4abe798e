# amaranth: UnusedElaboratable=no
# (the constructor tests create components that are never elaborated)
"""The datapath top against the golden model: tiled GEMMs with requantisation, bit-exact, under random stream gaps.

Each simulation runs several GEMMs back to back, planned by :func:`haneul.firmware.gemm.plan_gemm` (zero-padded
partial K and N tiles, several M tiles), with random per-channel requantisation parameters, every clamp mode and
both rounding modes, and compares the output with ``kernels.requantize(A @ W + bias, ...)``. The test plays the
command processor: GEMM ``g`` is loaded into scratchpad half ``g % 2`` while GEMM ``g - 1`` runs, and its commands
are sent once its data is loaded. All GEMMs use the same accumulator lines, so consecutive GEMMs also exercise the
sequencer's write-after-read ordering.
"""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from haneul.firmware.gemm import plan_gemm
from haneul.firmware.ir import Activation, OpType
from haneul.rtl.commands import Add, CommandWord, ErrorCode, Fence, Nop, Opcode, Pool, PoolMode, Requant, encode
from haneul.rtl.config import DatapathConfig
from haneul.rtl.datapath import Datapath
from haneul.sim.datapath_driver import DatapathDriver
from haneul.sim.golden import kernels, params
from haneul.sim.golden.params import PoolParams, activation_range
from haneul.sim.golden.quant import quantize_multiplier

CONFIGS = {
    "2x2": DatapathConfig(rows=2, cols=2, spad_depth=128, spad_banks=4, acc_depth=32, acc_banks=2),
    "4x4": DatapathConfig(rows=4, cols=4, spad_depth=256, spad_banks=4, acc_depth=32, acc_banks=2),
    "4x8": DatapathConfig(rows=4, cols=8, spad_depth=256, spad_banks=4, acc_depth=32, acc_banks=2),
}

CLAMPS = ("none", "relu", "relu6", "relu_n1_to_1", "range")


# GEMM jobs -------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Job:
    """One GEMM: its plan, the scratchpad writes, command words, parameter beats and the golden output."""
    plan: object
    writes: list
    words: list
    params: list
    expected: np.ndarray
    add_params: list = dataclasses.field(default_factory=list)

    @property
    def out_lines(self):
        return self.plan.out_lines

    def mismatch(self, lines):
        """``None`` if the output lines are right, else a description."""
        got = self.plan.assemble(lines)
        if np.array_equal(got, self.expected):
            return None
        p = self.plan
        return (f"GEMM M={p.m} K={p.k} N={p.n} ({p.m_tiles}x{p.k_tiles}x{p.n_tiles} tiles): "
                f"{np.count_nonzero(got != self.expected)} wrong outputs")


@dataclasses.dataclass
class VectorJob:
    """An ADD or POOL command list with its scratchpad writes, adder parameter beats and golden output lines."""
    what: str
    writes: list
    words: list
    expected: np.ndarray                 # out lines x cols
    add_params: list = dataclasses.field(default_factory=list)
    params: list = dataclasses.field(default_factory=list)
    mask: np.ndarray = None              # lanes to compare (default: all)

    @property
    def out_lines(self):
        return len(self.expected)

    def mismatch(self, lines):
        got = np.array(lines, dtype=np.int64).reshape(self.expected.shape)
        mask = np.ones(self.expected.shape, dtype=bool) if self.mask is None else self.mask
        wrong = np.count_nonzero((got != self.expected) & mask)
        return f"{self.what}: {wrong} wrong outputs" if wrong else None


def clamp_bounds(kind, rng, zero_point):
    if kind == "range":
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        return lo, hi
    activation = {"none": Activation.NONE, "relu": Activation.RELU, "relu6": Activation.RELU6,
                  "relu_n1_to_1": Activation.RELU_N1_TO_1}[kind]
    return activation_range(activation, float(rng.uniform(0.005, 0.1)), zero_point)


def make_job(cfg, rng, m, k, n, *, half, clamp, single_rounding, m_tile=None, acc_base=0, spread_weights=True):
    """A random GEMM of ``m x k`` by ``k x n`` in scratchpad half ``half``."""
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    if rng.random() < 0.2:                      # extremes
        a[rng.random(a.shape) < 0.5] = -128
        w[rng.random(w.shape) < 0.5] = -128
    bias = rng.integers(-(1 << 16), 1 << 16, n)
    if rng.random() < 0.2:
        bias = rng.integers(-(1 << 31), 1 << 31, n)
    scales = 2.0 ** rng.uniform(-17, 1, n)
    multiplier, shift = (np.array(v, dtype=np.int64) for v in zip(*(quantize_multiplier(s) for s in scales)))
    zero_point = int(rng.integers(-128, 128))
    act_min, act_max = clamp_bounds(clamp, rng, zero_point)

    spad_half = cfg.spad_depth // 2
    a_base = half * spad_half
    a_lines = -(-k // cfg.rows) * m
    bank = cfg.spad_depth // cfg.spad_banks
    w_base = -(-(a_base + a_lines) // bank) * bank if spread_weights else a_base + a_lines
    plan = plan_gemm(m, k, n, cfg, a_base=a_base, w_base=w_base, acc_base=acc_base, m_tile=m_tile)
    assert plan.w_base + plan.w_lines <= a_base + spad_half, "GEMM does not fit in a half"

    acc = a.astype(np.int64) @ w.astype(np.int64) + bias
    expected = kernels.requantize(acc, multiplier, shift, zero_point, act_min, act_max,
                                  single_rounding=single_rounding)
    fmt = Datapath(cfg).format
    return Job(plan=plan,
               writes=plan.activation_lines(a) + plan.weight_lines(w),
               words=[fmt.encode(c) for c in plan.commands],
               params=plan.param_beats(bias, multiplier, shift, zero_point, act_min, act_max, single_rounding),
               expected=expected)


def add_params(rng):
    """AddParams as the compiler prepares them for random scales, zero points and fused activation."""
    def tensor(scale, zero_point):
        return SimpleNamespace(quant=SimpleNamespace(scale=[scale]), scale=scale, zero_point=zero_point)
    scales = np.float32(2.0) ** rng.uniform(-10, 1, 3)
    zps = [int(v) for v in rng.integers(-128, 128, 3)]
    op = SimpleNamespace(type=OpType.ADD, inputs=[tensor(scales[0], zps[0]), tensor(scales[1], zps[1])],
                         outputs=[tensor(scales[2], zps[2])],
                         options=SimpleNamespace(activation=list(Activation)[int(rng.integers(len(Activation)))]))
    return params.prepare(op)


def add_payload(p):
    return {
        "input1": {"offset": p.input1_offset, "multiplier": p.input1_multiplier, "shift": p.input1_shift},
        "input2": {"offset": p.input2_offset, "multiplier": p.input2_multiplier, "shift": p.input2_shift},
        "output_offset": p.output_offset, "output_multiplier": p.output_multiplier, "output_shift": p.output_shift,
        "act_min": p.act_min, "act_max": p.act_max,
    }


def widen(lines, cfg):
    """Vector-unit lines (``rows`` lanes) as they appear on ``out`` (``cols`` lanes, the rest zero)."""
    out = np.zeros((len(lines), cfg.cols), dtype=np.int64)
    out[:, :cfg.rows] = lines
    return out


def make_add_job(cfg, rng, *, half, pieces, offset=0):
    """ADD commands over ``pieces`` (line counts), each with new parameters or not, golden from kernels.add."""
    base = half * (cfg.spad_depth // 2) + offset
    writes, words, beats, expected = [], [], [], []
    p = None
    addr = base
    for count in pieces:
        a = rng.integers(-128, 128, (count, cfg.rows), dtype=np.int8)
        b = rng.integers(-128, 128, (count, cfg.rows), dtype=np.int8)
        load = p is None or rng.random() < 0.6
        if load:
            p = add_params(rng)
            beats.append(add_payload(p))
        writes += [(addr + i, a[i]) for i in range(count)] + [(addr + count + i, b[i]) for i in range(count)]
        words.append(encode(Add(a_addr=addr, b_addr=addr + count, count=count, load_params=load), cfg))
        expected.append(kernels.add(a, b, p))
        addr += 2 * count
    assert addr <= (half + 1) * (cfg.spad_depth // 2)
    return VectorJob(what=f"ADD {pieces}", writes=writes, words=words, add_params=beats,
                     expected=widen(np.concatenate(expected), cfg))


def pool_windows(x, window, mode, act_min, act_max):
    """The golden pooling of consecutive windows of ``window`` lines of ``x`` (the last one may be shorter)."""
    out = []
    for start in range(0, len(x), window):
        win = x[start:start + window]
        n = len(win)
        p = PoolParams(filter=(1, n), stride=(1, n), padding=((0, 0), (0, 0)), output_size=(1, 1),
                       act_min=act_min, act_max=act_max)
        kernel = kernels.max_pool_2d if mode is PoolMode.MAX else kernels.average_pool_2d
        out.append(kernel(win.reshape(1, 1, n, -1), p).reshape(-1))
    return np.array(out)


def make_pool_job(cfg, rng, *, half, pieces, offset=0):
    """POOL commands over ``pieces`` ((lines, window)), random mode and clamp, golden from the pooling kernels."""
    base = half * (cfg.spad_depth // 2) + offset
    writes, words, expected = [], [], []
    addr = base
    for count, window in pieces:
        x = rng.integers(-128, 128, (count, cfg.rows), dtype=np.int8)
        if rng.random() < 0.3:
            x[rng.random(x.shape) < 0.5] = int(rng.choice([-128, 127]))
        mode = PoolMode(int(rng.integers(2)))
        act_min, act_max = clamp_bounds(CLAMPS[int(rng.integers(len(CLAMPS)))], rng, int(rng.integers(-20, 20)))
        writes += [(addr + i, x[i]) for i in range(count)]
        words.append(encode(Pool(addr=addr, count=count, window=window, mode=mode, act_min=act_min,
                                 act_max=act_max), cfg))
        expected.append(pool_windows(x, window, mode, act_min, act_max))
        addr += count
    assert addr <= (half + 1) * (cfg.spad_depth // 2)
    return VectorJob(what=f"POOL {pieces}", writes=writes, words=words, expected=widen(np.concatenate(expected), cfg))


def fits(cfg, m, k, n, m_tile=None):
    spad_half = cfg.spad_depth // 2
    bank = cfg.spad_depth // cfg.spad_banks
    k_tiles, n_tiles = -(-k // cfg.rows), -(-n // cfg.cols)
    a_lines = k_tiles * m
    w_lines = n_tiles * k_tiles * cfg.rows * -(-cfg.cols // cfg.rows)
    return -(-a_lines // bank) * bank + w_lines <= spad_half


def random_shape(cfg, rng):
    """M, K, N with K and N not multiples of the array (or smaller than it), fitting in half the scratchpad."""
    while True:
        m = int(rng.integers(1, 3 * cfg.rows + 6))
        k = int(rng.integers(1, 3 * cfg.rows + 1))
        n = int(rng.integers(1, 2 * cfg.cols + 2))
        if k % cfg.rows == 0 or n % cfg.cols == 0:
            continue
        if fits(cfg, m, k, n):
            return m, k, n


# Simulation harness ---------------------------------------------------------------------------------------------

class Harness(DatapathDriver):
    """:class:`~haneul.sim.datapath_driver.DatapathDriver` with the tests' gap settings: random gaps on every
    input stream (``param_gap`` for both parameter streams) and random ``out`` stalls, all drawn from the test's
    ``rng``. The driver's testbenches: a loader (scratchpad writes of job ``g`` once the output of job ``g - 2``,
    which used the same scratchpad half, is complete), a commander (the command words of job ``g`` once its data is
    loaded), the parameter drivers and an output sink that checks the stream rules of ``out`` and samples the
    status outputs in every cycle (``trace``). :meth:`run` returns the harness itself (``out``, ``trace``, ``cum``
    and the driver's measurements in ``measured``).
    """

    def __init__(self, cfg, jobs, rng, *, cmd_gap=0.3, wr_gap=0.3, param_gap=0.3, out_gap=0.3, extra_words=(),
                 max_cycles=20000, datapath=None):
        gaps = dict(cmd=cmd_gap, spad_wr=wr_gap, ppu_param=param_gap, add_param=param_gap, out=out_gap)
        super().__init__(cfg, jobs, gaps=gaps, rng=rng, extra_words=extra_words, max_cycles=max_cycles,
                         datapath=datapath)
        self.measured = None

    def run(self, extra_testbenches=()):
        self.measured = super().run(extra_testbenches)
        return self


def check(harness):
    for g, job in enumerate(harness.jobs):
        problem = job.mismatch(harness.out[harness.cum[g]:harness.cum[g + 1]])
        assert problem is None, f"job {g}: {problem}"


# Tests ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_gemms(name, rng):
    """Constrained-random tiled GEMMs, all clamp modes, both roundings, random gaps everywhere."""
    cfg = CONFIGS[name]
    jobs = []
    for g in range(5):
        m, k, n = random_shape(cfg, rng)
        # several M tiles, each at most half the accumulator (a GEMM's output tile lives in one half)
        m_tile = int(rng.integers(1, min(m, cfg.acc_depth // 2) + 1)) if g == 1 else None
        jobs.append(make_job(cfg, rng, m, k, n, half=g % 2, clamp=CLAMPS[g % len(CLAMPS)],
                             single_rounding=bool(g % 2), m_tile=m_tile))
    h = Harness(cfg, jobs, rng).run()
    check(h)
    # Every activation vector went through the array once.
    assert h.trace[-1][1] == sum(j.plan.array_vectors for j in jobs)
    assert not any(t[2] for t in h.trace)


def test_smooth_and_stalled(rng):
    """The same kind of GEMMs without any gaps, then with a mostly stalled output."""
    cfg = CONFIGS["4x4"]
    for gaps in (dict(cmd_gap=0, wr_gap=0, param_gap=0, out_gap=0),
                 dict(cmd_gap=0, wr_gap=0, param_gap=0.8, out_gap=0.85)):
        jobs = [make_job(cfg, rng, *random_shape(cfg, rng), half=g % 2, clamp=CLAMPS[(g + 2) % len(CLAMPS)],
                         single_rounding=bool(g % 2)) for g in range(3)]
        check(Harness(cfg, jobs, rng, **gaps).run())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_back_to_back_throughput(name, rng):
    """Back-to-back MATMULs of M >= rows * ceil(cols/rows) + 1 vectors keep the array busy in every cycle, also
    across the REQUANT between two output tiles, and the result is right."""
    cfg = CONFIGS[name]
    lpr = -(-cfg.cols // cfg.rows)
    m = cfg.rows * lpr + 1
    job = make_job(cfg, rng, m, 3 * cfg.rows, 2 * cfg.cols, half=0, clamp="none", single_rounding=False)
    assert [type(c).__name__ for c in job.plan.commands] == ["Matmul"] * 3 + ["Requant"] + ["Matmul"] * 3 + ["Requant"]
    h = Harness(cfg, [job], rng, cmd_gap=0, wr_gap=0, param_gap=0, out_gap=0).run()
    check(h)
    active = [t[1] for t in h.trace]
    vectors = job.plan.array_vectors
    assert vectors == 6 * m and active[-1] == vectors
    first = next(i for i, a in enumerate(active) if a)
    last = active.index(vectors)
    # One activation vector in every cycle from the first to the last: no bubble between the six tiles.
    assert last - first + 1 == vectors, f"{vectors} vectors took {last - first + 1} cycles"


def test_short_tiles(rng):
    """MATMULs shorter than the weight load (M = 1, 2) are correct; bubbles are allowed."""
    cfg = CONFIGS["4x8"]
    jobs = [make_job(cfg, rng, m, 9, 11, half=g % 2, clamp="relu", single_rounding=bool(g), m_tile=mt)
            for g, (m, mt) in enumerate([(1, None), (5, 2), (3, 1)])]
    check(Harness(cfg, jobs, rng).run())


def test_shared_bank(rng):
    """Activations and weights in the same scratchpad bank (read-port arbitration) are still correct."""
    cfg = CONFIGS["2x2"]
    jobs = [make_job(cfg, rng, 5, 3, 3, half=g, clamp="none", single_rounding=False, spread_weights=False)
            for g in range(2)]
    check(Harness(cfg, jobs, rng).run())


@pytest.mark.parametrize("same_lines", [False, True])
def test_write_after_read(same_lines, rng):
    """A MATMUL that overwrites accumulator lines waits for the read-out of those lines, even when the output is
    stalled most of the time. With ``same_lines`` every output tile uses the same accumulator lines."""
    cfg = CONFIGS["2x2"]
    job = make_job(cfg, rng, 36, 2, 3, half=0, clamp="none", single_rounding=False, m_tile=12, spread_weights=False)
    if same_lines:
        fmt = Datapath(cfg).format
        job.words = [fmt.encode(dataclasses.replace(c, acc_addr=5)) for c in job.plan.commands]
    h = Harness(cfg, [job], rng, cmd_gap=0, wr_gap=0, param_gap=0, out_gap=0.9).run()
    check(h)


def raw_word(cfg, opcode, member=None, **fields):
    """A command word built from the layout directly, without the encoder's checks."""
    init = {"opcode": opcode}
    if member is not None:
        init["args"] = {member: fields}
    return CommandWord(cfg).const(init).as_value().value


@pytest.mark.parametrize("bad, code", [
    ("opcode", ErrorCode.ILLEGAL_OPCODE),
    ("count", ErrorCode.BAD_COUNT),
    ("range", ErrorCode.BAD_RANGE),
])
def test_illegal_command(bad, code, rng):
    """An illegal command sets the sticky error; the datapath finishes the work before it, discards the commands
    after it (the stream keeps moving: no hang) and goes idle."""
    cfg = CONFIGS["2x2"]
    first = make_job(cfg, rng, 3, 3, 3, half=0, clamp="none", single_rounding=False)
    second = make_job(cfg, rng, 4, 3, 3, half=1, clamp="relu", single_rounding=True)
    if bad == "opcode":
        word = 0xF | (0x1234 << 8)
    elif bad == "count":
        word = raw_word(cfg, Opcode.MATMUL, "matmul", act_addr=0, weight_addr=0, acc_addr=0, count=0, accumulate=0)
    else:
        word = raw_word(cfg, Opcode.REQUANT, "requant", acc_addr=30, count=3, load_params=0)

    dut_words = first.words + [word] + second.words
    discarded = Job(plan=first.plan, writes=first.writes, words=dut_words, params=first.params,
                    expected=first.expected)
    h = Harness(cfg, [discarded], rng, cmd_gap=0.2, wr_gap=0, param_gap=0, out_gap=0.3).run()
    check(h)                                    # the output of the first GEMM only
    busy, active, error, err_code = h.trace[-1]
    assert error and err_code == code
    assert active == first.plan.array_vectors   # nothing of the second GEMM ran



def test_error_clear(rng):
    """After an illegal command and error_clear, the datapath executes the next commands normally."""
    cfg = CONFIGS["2x2"]
    job = make_job(cfg, rng, 3, 3, 3, half=0, clamp="none", single_rounding=False)
    h = Harness(cfg, [job], rng, cmd_gap=0, wr_gap=0, param_gap=0, out_gap=0)
    dut = h.dut
    orig_commander = h.commander

    async def commander(ctx):
        await h.send(ctx, dut.cmd, 0xE, "cmd", raw=True)          # illegal opcode 14
        await h.send(ctx, dut.cmd, job.words[0], "cmd", raw=True)  # discarded
        await ctx.tick().until(dut.idle)
        assert ctx.get(dut.error) == 1 and ctx.get(dut.error_code) == ErrorCode.ILLEGAL_OPCODE
        assert ctx.get(dut.active_cycles) == 0
        ctx.set(dut.error_clear, 1)
        await ctx.tick()
        ctx.set(dut.error_clear, 0)
        assert ctx.get(dut.error) == 0
        await orig_commander(ctx)

    h.commander = commander
    h.run()
    check(h)
    assert not h.trace[-1][2]


def test_fence_and_nop(rng):
    """NOP does nothing; FENCE waits until all earlier work (including the output) is complete."""
    cfg = CONFIGS["2x2"]
    job = make_job(cfg, rng, 4, 3, 3, half=0, clamp="none", single_rounding=False)
    fmt = Datapath(cfg).format
    job.words = [fmt.encode(Nop())] + job.words + [fmt.encode(Fence()), fmt.encode(Nop()), fmt.encode(Nop())]
    h = Harness(cfg, [job], rng, cmd_gap=0, wr_gap=0, param_gap=0, out_gap=0.7)
    dut = h.dut
    fence_seen = []

    async def watch(ctx):
        # The FENCE word is the third from last; record the state when the last word (a NOP) is accepted.
        accepted = 0
        while accepted < len(job.words):
            *_, valid, ready = await ctx.tick().sample(dut.cmd.valid, dut.cmd.ready)
            if valid and ready:
                accepted += 1
                if accepted == len(job.words):
                    fence_seen.append(len(h.out))

    h.run(extra_testbenches=[watch])
    check(h)
    # The first NOP after the FENCE waits in the check stage while the FENCE is in the command register, so the
    # second is accepted only after the FENCE left, i.e. after the last output line (at most one more line can be in
    # the sink's sampling window).
    assert fence_seen and fence_seen[0] >= job.out_lines - 1


@pytest.mark.parametrize("name", ["4x4", "4x8"])
def test_vector_units(name, rng):
    """ADD and POOL (with new or kept adder parameters, windows that do not divide the lines, windows longer than
    the lines, all clamp modes), interleaved with GEMMs: each output line in command order, bit-exact."""
    cfg = CONFIGS[name]
    jobs = [
        make_add_job(cfg, rng, half=0, pieces=[5, 1, 8]),
        make_pool_job(cfg, rng, half=1, pieces=[(12, 4), (7, 3), (3, 5), (6, 1)]),
        make_job(cfg, rng, *random_shape(cfg, rng), half=0, clamp="relu6", single_rounding=True),
        make_pool_job(cfg, rng, half=1, pieces=[(9, 9), (10, 4)]),
        make_add_job(cfg, rng, half=0, pieces=[3, 6]),
        make_job(cfg, rng, *random_shape(cfg, rng), half=1, clamp="none", single_rounding=False),
    ]
    h = Harness(cfg, jobs, rng).run()
    check(h)
    assert not h.trace[-1][2]


def test_vector_units_back_to_back(rng):
    """ADD and POOL commands mixed into a GEMM's commands, sent without waiting: the output keeps command order
    across every switch between the requantiser, the adder and the pooling unit."""
    cfg = CONFIGS["4x8"]
    gemm = make_job(cfg, rng, 6, 5, 17, half=0, clamp="none", single_rounding=False)
    add = make_add_job(cfg, rng, half=1, pieces=[4, 2])
    pool = make_pool_job(cfg, rng, half=1, pieces=[(8, 2)], offset=12)
    split = [type(c) for c in gemm.plan.commands].index(Requant) + 1       # after the first REQUANT
    gemm_lines, gemm_mask = gemm_out_lines(gemm)
    first = gemm.plan.readouts[0].rows
    parts = [add.expected[:4], gemm_lines[:first], pool.expected, gemm_lines[first:], add.expected[4:]]
    masks = [np.ones_like(add.expected[:4], dtype=bool), gemm_mask[:first], np.ones_like(pool.expected, dtype=bool),
             gemm_mask[first:], np.ones_like(add.expected[4:], dtype=bool)]
    mixed = VectorJob(what="mixed", writes=gemm.writes + add.writes + pool.writes,
                      words=add.words[:1] + gemm.words[:split] + pool.words + gemm.words[split:] + add.words[1:],
                      expected=np.concatenate(parts), mask=np.concatenate(masks),
                      add_params=add.add_params, params=gemm.params)
    check(Harness(cfg, [mixed], rng, cmd_gap=0.1).run())


def gemm_out_lines(job):
    """The lines a GEMM job sends on ``out``, in order, from its golden result, and the mask of their lanes that
    hold output channels (the others are zero padding)."""
    cols = job.plan.config.cols
    lines, mask = [], []
    for r in job.plan.readouts:
        for i in range(r.rows):
            chunk = job.expected[r.m0 + i, r.n_tile * cols:(r.n_tile + 1) * cols]
            lines.append(np.pad(chunk.astype(np.int64), (0, cols - len(chunk))))
            mask.append(np.arange(cols) < len(chunk))
    return np.array(lines), np.array(mask)


def test_without_vector_units(rng):
    """A datapath built without the adder and the pooling unit flags ADD and POOL as unsupported."""
    cfg = CONFIGS["2x2"]
    dut = Datapath(cfg, add=False, pool=False)
    assert not hasattr(dut, "add_param")
    job = make_job(cfg, rng, 3, 3, 3, half=0, clamp="none", single_rounding=False)
    job.words = job.words + [encode(Pool(0, 4, 2), cfg)]
    h = Harness(cfg, [job], rng, datapath=dut)
    h.run()
    check(h)
    assert h.trace[-1][2] and h.trace[-1][3] == ErrorCode.UNSUPPORTED


def test_constructor_checks():
    with pytest.raises(TypeError, match="DatapathConfig"):
        Datapath("4x4")
    with pytest.raises(ValueError, match="accumulator width must be 32"):
        Datapath(DatapathConfig(rows=2, cols=2, acc_width=24))
    with pytest.raises(ValueError, match="input width must be 8"):
        Datapath(DatapathConfig(rows=2, cols=2, input_width=6))
    with pytest.raises(ValueError, match=r"The adder needs rows <= cols"):
        Datapath(DatapathConfig(rows=4, cols=2), add=True)
    with pytest.raises(TypeError, match="Option pool must be a bool or None"):
        Datapath(DatapathConfig(rows=2, cols=2), pool="yes")
    wide = Datapath(DatapathConfig(rows=4, cols=2))
    assert not wide.has_add and not wide.has_pool
    assert Datapath(DatapathConfig(rows=2, cols=4)).has_add
