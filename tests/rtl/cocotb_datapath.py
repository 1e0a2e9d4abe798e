"""cocotb testbench for ``haneul.rtl.datapath.Datapath`` (run by ``tests/rtl/test_datapath_cocotb.py``).

The datapath's Verilog (``top``) is driven through all of its streams, each with its own idle or backpressure
inserter: ``cmd``, ``spad_wr``, ``ppu_param`` and ``add_param`` by
:class:`~haneul.sim.cocotb.streams.StreamDriver` s, ``out`` by a :class:`~haneul.sim.cocotb.streams.StreamMonitor`.
The testbench plays the host: it plans GEMMs with :func:`haneul.firmware.gemm.plan_gemm`, loads job ``g`` into
scratchpad half ``g % 2`` once the output of job ``g - 2`` (the previous user of that half) is complete, and sends
the job's command words once its data is loaded. Every output line is checked, in order and on every lane, by a
:class:`~haneul.sim.cocotb.scoreboard.Scoreboard` against the golden model:

* GEMM: ``kernels.requantize(A @ W + bias, multiplier, shift, zero_point, act_min, act_max, single_rounding)``; the
  lanes past ``N`` of a partial N tile are what the zero-padded tile gives (``requantize`` of 0 with zero
  parameters, i.e. the clamped zero point);
* ADD: ``kernels.add`` with parameters prepared from random scales as the compiler does; POOL:
  ``kernels.max_pool_2d`` / ``kernels.average_pool_2d`` per window; lanes ``rows .. cols - 1`` zero;
* DWCONV: ``kernels.depthwise_conv_2d`` of a random 3 x 3 layer planned by
  :func:`haneul.firmware.dwconv.plan_dwconv` (one command per channel group, padding masked or prepadded); the
  lanes without a channel are the requantised zero of their zero parameters.

Parameters (from :func:`haneul.sim.cocotb.tb_params`): the :class:`~haneul.rtl.config.DatapathConfig` fields
``rows``, ``cols``, ``spad_depth``, ``spad_banks``, ``acc_depth``, ``acc_banks``, and ``scale`` (a multiplier for
the amount of random work, default 1).
"""

import dataclasses
import logging
import random
import zlib
from types import SimpleNamespace

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, with_timeout

from haneul.firmware.dwconv import plan_dwconv
from haneul.firmware.gemm import plan_gemm
from haneul.firmware.ir import Activation, OpType
from haneul.rtl.commands import (Add, CommandFormat, ErrorCode, Opcode, Pool, PoolMode, encode,
                                 weight_tile_lines)
from haneul.rtl.config import DatapathConfig
from haneul.rtl.datapath import Datapath
from haneul.sim.cocotb import pauses, tb_params
from haneul.sim.cocotb.payload import Codec, payload_shape
from haneul.sim.cocotb.scoreboard import Scoreboard
from haneul.sim.cocotb.streams import StreamDriver, StreamMonitor
from haneul.sim.golden import kernels, params
from haneul.sim.golden.params import DepthwiseParams, PoolParams, activation_range, compute_padding
from haneul.sim.golden.quant import INT32_MAX, INT32_MIN, quantize_multiplier

PARAMS = tb_params()
CONFIG = DatapathConfig(**{key: PARAMS[key] for key in ("rows", "cols", "spad_depth", "spad_banks", "acc_depth",
                                                        "acc_banks") if key in PARAMS})
SCALE = PARAMS.get("scale", 1)

#: Traffic mixes: a ``pauses.TRAFFIC`` preset for (cmd, spad_wr, ppu_param and add_param, out).
MIXES = {
    "smooth":     ("smooth", "smooth", "smooth", "smooth"),   # no gaps anywhere
    "valid_gaps": ("heavy",  "light",  "heavy",  "smooth"),   # random valid gaps on every input stream
    "ready_gaps": ("smooth", "smooth", "smooth", "heavy"),    # random ready gaps on out (backpressure)
    "random":     ("light",  "bursty", "light",  "bursty"),   # everything at once, with long stalls
}

#: Fused activations: the clamp bounds of the requantiser.
CLAMPS = ("none", "relu", "relu6", "relu_n1_to_1", "range")
_ACTIVATIONS = {"none": Activation.NONE, "relu": Activation.RELU, "relu6": Activation.RELU6,
                "relu_n1_to_1": Activation.RELU_N1_TO_1}


# Stimulus and golden model -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Job:
    """One unit of work for the datapath, as the host prepares it.

    Attributes
    ----------
    name : str
        For the log and for failure messages.
    writes : list of (int, np.ndarray)
        Scratchpad writes (line address, ``rows`` int8 values), all inside one scratchpad half.
    words : list of int
        Command words.
    ppu_beats, add_beats : list of dict
        ``ppu_param`` and ``add_param`` beats the commands take, in order.
    lines : list of list of int
        The expected ``out`` lines (``cols`` int8 values each), in order.
    vectors : int
        Activation vectors the commands stream through the array.
    """
    name: str
    writes: list
    words: list
    ppu_beats: list = dataclasses.field(default_factory=list)
    add_beats: list = dataclasses.field(default_factory=list)
    lines: list = dataclasses.field(default_factory=list)
    vectors: int = 0


def clamp_bounds(kind, rng, zero_point):
    """``(act_min, act_max)`` of a fused activation: ``"range"`` is an arbitrary pair (possibly equal)."""
    if kind == "range":
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        return lo, hi
    return activation_range(_ACTIVATIONS[kind], float(rng.uniform(0.005, 0.1)), zero_point)


def random_scales(rng, n, corner):
    """Per-channel real multipliers: mostly typical (``2^-17 .. 1``), else tiny (shifts -28 .. -31) or above one
    (positive shifts 1 .. 13). ``corner`` makes the extreme kinds as likely as the typical one."""
    odds = [1 / 3, 1 / 3, 1 / 3] if corner else [0.8, 0.1, 0.1]
    kind = rng.choice(3, n, p=odds)
    exponent = np.select([kind == 0, kind == 1, kind == 2],
                         [rng.uniform(-17, 0, n), rng.uniform(-31.99, -28, n), rng.uniform(0, 12.9, n)])
    return 2.0 ** exponent


def random_biases(rng, n, corner):
    """Per-channel int32 biases: small, anywhere in int32, or within 2^12 of INT32_MIN / INT32_MAX (the sum with
    the accumulator then wraps)."""
    odds = [0.2, 0.4, 0.4] if corner else [0.7, 0.15, 0.15]
    kind = rng.choice(3, n, p=odds)
    below_max, above_min = INT32_MAX - rng.integers(0, 1 << 12, n), INT32_MIN + rng.integers(0, 1 << 12, n)
    near = np.where(rng.random(n) < 0.5, below_max, above_min)
    return np.select([kind == 0, kind == 1, kind == 2],
                     [rng.integers(-(1 << 16), 1 << 16, n), rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True),
                      near]).astype(np.int64)


def random_operands(rng, shape, corner):
    """int8 operands: uniform, sparse, or mostly -128 / 127."""
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    pick = rng.random()
    if corner or pick < 0.15:
        x[rng.random(shape) < 0.7] = -128
        x[rng.random(shape) < 0.15] = 127
    elif pick < 0.3:
        x[rng.random(shape) < 0.7] = 0
    return x


class Stimulus:
    """Random jobs for one :class:`DatapathConfig`, with their golden output.

    Parameters
    ----------
    config : DatapathConfig
    rng : numpy.random.Generator
    """

    def __init__(self, config, rng):
        self.config = config
        self.rng = rng
        self.half_lines = config.spad_depth // 2
        self.bank_lines = config.spad_depth // config.spad_banks
        self.fmt = CommandFormat(config)

    # GEMM --------------------------------------------------------------------------------------------------------

    def _plan(self, m, k, n, half, *, m_tile=None, acc_base=0, shared_bank=False):
        """The plan of an ``m x k x n`` GEMM inside scratchpad half ``half``, or ``None`` if it does not fit."""
        cfg = self.config
        a_base = half * self.half_lines
        a_lines = -(-k // cfg.rows) * m
        w_lines = -(-n // cfg.cols) * -(-k // cfg.rows) * weight_tile_lines(cfg)
        if shared_bank:                                        # activation and weight reads share a bank
            w_base = a_base + a_lines
        else:
            w_base = -(-(a_base + a_lines) // self.bank_lines) * self.bank_lines
        if w_base + w_lines > a_base + self.half_lines:
            return None
        return plan_gemm(m, k, n, cfg, a_base=a_base, w_base=w_base, acc_base=acc_base, m_tile=m_tile)

    def shape(self):
        """M, K, N of a GEMM whose K and N are not multiples of the array (partial K and N tiles); M up to
        ``3 rows + 5``."""
        rows, cols, rng = self.config.rows, self.config.cols, self.rng
        while True:
            m = int(rng.integers(1, 3 * rows + 6))
            k = int(rng.integers(1, 3 * rows + 1))
            n = int(rng.integers(1, 2 * cols + 2))
            if k % rows and n % cols and self._plan(m, k, n, 0) is not None:
                return m, k, n

    def gemm(self, half, *, clamp, single_rounding, corner=False, shape=None, m_tile=None):
        """A random GEMM in scratchpad half ``half`` with random requantisation parameters.

        ``m_tile`` (``"random"`` for a random one) splits M into several output tiles, the last one partial; the
        output tiles also start at a random offset in the accumulator halves.
        """
        rng, cfg = self.rng, self.config
        m, k, n = shape if shape is not None else self.shape()
        half_acc = cfg.acc_depth // 2
        if m_tile == "random":
            m_tile = int(rng.integers(1, min(m, half_acc) + 1))
        acc_base = int(rng.integers(0, half_acc - (m_tile or min(m, half_acc)) + 1)) if rng.random() < 0.5 else 0
        shared_bank = rng.random() < 0.25
        plan = self._plan(m, k, n, half, m_tile=m_tile, acc_base=acc_base, shared_bank=shared_bank)
        if plan is None:  # the shared-bank layout is never larger; only an explicit shape can miss
            raise ValueError(f"GEMM {m}x{k}x{n} does not fit in half a scratchpad of {cfg.spad_depth} lines")

        a = random_operands(rng, (m, k), corner)
        w = random_operands(rng, (k, n), corner)
        bias = random_biases(rng, n, corner)
        multiplier, shift = (np.array(v, dtype=np.int64)
                             for v in zip(*(quantize_multiplier(s) for s in random_scales(rng, n, corner))))
        if corner or rng.random() < 0.3:
            zero_point = int(rng.choice([-128, 127]))
        else:
            zero_point = int(rng.integers(-128, 128))
        act_min, act_max = clamp_bounds(clamp, rng, zero_point)

        acc = a.astype(np.int64) @ w.astype(np.int64) + bias
        golden = kernels.requantize(acc, multiplier, shift, zero_point, act_min, act_max,
                                    single_rounding=single_rounding)
        # Lanes past N hold zero weights and zero parameters: what the padded tile computes.
        padding = int(kernels.requantize(np.zeros(1, np.int64), 0, 0, zero_point, act_min, act_max,
                                         single_rounding=single_rounding)[0])
        lines = []
        for readout in plan.readouts:
            n0 = readout.n_tile * cfg.cols
            for i in range(readout.rows):
                chunk = golden[readout.m0 + i, n0:n0 + cfg.cols]
                lines.append([int(v) for v in chunk] + [padding] * (cfg.cols - len(chunk)))
        beats = plan.param_beats(bias, multiplier, shift, zero_point, act_min, act_max, single_rounding)
        name = (f"GEMM {m}x{k}x{n} (tiles M {plan.m_tiles} K {plan.k_tiles} N {plan.n_tiles}, {clamp} "
                f"[{act_min}, {act_max}], zp {zero_point}, {'single' if single_rounding else 'double'} rounding, "
                f"shifts {int(shift.min())}..{int(shift.max())})")
        return Job(name=name, writes=plan.activation_lines(a) + plan.weight_lines(w),
                   words=[self.fmt.encode(c) for c in plan.commands], ppu_beats=beats, lines=lines,
                   vectors=plan.array_vectors)

    # Vector units ------------------------------------------------------------------------------------------------

    def _widen(self, lines):
        """Vector-unit lines (``rows`` lanes) as they appear on ``out``: ``cols`` lanes, the others zero."""
        pad = [0] * (self.config.cols - self.config.rows)
        return [[int(v) for v in line] + pad for line in lines]

    def add_params(self):
        """TFLite ADD parameters as the compiler prepares them for random scales, zero points and activation."""
        rng = self.rng

        def tensor(scale, zero_point):
            return SimpleNamespace(quant=SimpleNamespace(scale=[scale]), scale=scale, zero_point=zero_point)
        scales = np.float32(2.0) ** rng.uniform(-10, 1, 3)
        zps = [int(v) for v in rng.integers(-128, 128, 3)]
        activation = list(Activation)[int(rng.integers(len(Activation)))]
        op = SimpleNamespace(type=OpType.ADD, inputs=[tensor(scales[0], zps[0]), tensor(scales[1], zps[1])],
                             outputs=[tensor(scales[2], zps[2])], options=SimpleNamespace(activation=activation))
        return params.prepare(op)

    @staticmethod
    def add_beat(p):
        """An ``add_param`` beat (``eltwise.Params``) from golden ``AddParams``."""
        return {
            "input1": {"offset": p.input1_offset, "multiplier": p.input1_multiplier, "shift": p.input1_shift},
            "input2": {"offset": p.input2_offset, "multiplier": p.input2_multiplier, "shift": p.input2_shift},
            "output_offset": p.output_offset, "output_multiplier": p.output_multiplier,
            "output_shift": p.output_shift, "act_min": p.act_min, "act_max": p.act_max,
        }

    def add(self, half, counts):
        """``ADD`` commands of ``counts`` line pairs each, the operands in half ``half``; each command loads new
        parameters or (60 % / 40 %) keeps the previous ones."""
        rng, rows = self.rng, self.config.rows
        addr = half * self.half_lines
        job = Job(name=f"ADD {counts}", writes=[], words=[])
        p = None
        for count in counts:
            a = random_operands(rng, (count, rows), False)
            b = random_operands(rng, (count, rows), False)
            load = p is None or rng.random() < 0.6
            if load:
                p = self.add_params()
                job.add_beats.append(self.add_beat(p))
            job.writes += [(addr + i, a[i]) for i in range(count)] + [(addr + count + i, b[i]) for i in range(count)]
            job.words.append(encode(Add(a_addr=addr, b_addr=addr + count, count=count, load_params=load),
                                    self.config))
            job.lines += self._widen(kernels.add(a, b, p))
            addr += 2 * count
        assert addr <= (half + 1) * self.half_lines, "ADD operands do not fit in half the scratchpad"
        return job

    @staticmethod
    def pool_golden(x, window, mode, act_min, act_max):
        """One line per window of ``window`` consecutive lines of ``x`` (the last one shorter), by the golden
        pooling kernels on a 1 x n window."""
        out = []
        for start in range(0, len(x), window):
            win = x[start:start + window]
            n = len(win)
            p = PoolParams(filter=(1, n), stride=(1, n), padding=((0, 0), (0, 0)), output_size=(1, 1),
                           act_min=act_min, act_max=act_max)
            kernel = kernels.max_pool_2d if mode is PoolMode.MAX else kernels.average_pool_2d
            out.append(kernel(win.reshape(1, 1, n, -1), p).reshape(-1))
        return out

    def pool(self, half, pieces):
        """``POOL`` commands over ``pieces`` of ``(lines, window)``, random mode and clamp, in half ``half``."""
        rng, rows = self.rng, self.config.rows
        addr = half * self.half_lines
        job = Job(name=f"POOL {pieces}", writes=[], words=[])
        for count, window in pieces:
            x = random_operands(rng, (count, rows), rng.random() < 0.3)
            mode = PoolMode(int(rng.integers(2)))
            act_min, act_max = clamp_bounds(CLAMPS[int(rng.integers(len(CLAMPS)))], rng, int(rng.integers(-20, 20)))
            job.writes += [(addr + i, x[i]) for i in range(count)]
            job.words.append(encode(Pool(addr=addr, count=count, window=window, mode=mode, act_min=act_min,
                                         act_max=act_max), self.config))
            job.lines += self._widen(self.pool_golden(x, window, mode, act_min, act_max))
            addr += count
        assert addr <= (half + 1) * self.half_lines, "POOL input does not fit in half the scratchpad"
        return job

    def dwconv(self, half, *, stride, same, prepadded, clamp):
        """A random 3 x 3 depthwise layer (1 to 6 pixels per side, channels not a multiple of ``rows``) in half
        ``half``: one ``DWCONV`` per channel group, golden from ``kernels.depthwise_conv_2d``."""
        rng, cfg = self.rng, self.config
        while True:
            h, w = (int(v) for v in rng.integers(1 if same else 3, 7, 2))
            c = int(rng.integers(1, 2 * cfg.rows + 2))
            oh, ow = ((-(-h // stride), -(-w // stride)) if same else ((h - 3) // stride + 1, (w - 3) // stride + 1))
            pad = ((compute_padding(h, 3, stride, 1, oh), compute_padding(w, 3, stride, 1, ow)) if same
                   else ((0, 0), (0, 0)))
            zp_in = int(rng.choice([-128, 127, int(rng.integers(-128, 128))]))
            plan = plan_dwconv(h, w, c, stride, pad, cfg, zero_point=zp_in, a_base=half * self.half_lines,
                               prepadded=prepadded)
            if plan.lines <= self.half_lines:
                break
        zp_out = int(rng.choice([-128, 127, int(rng.integers(-128, 128))]))
        multiplier, shift = (np.array(v, dtype=np.int64) for v in zip(*(quantize_multiplier(s)
                                                                         for s in 2.0 ** rng.uniform(-14, 0, c))))
        act_min, act_max = clamp_bounds(clamp, rng, zp_out)
        p = DepthwiseParams(input_offset=-zp_in, output_offset=zp_out, output_multiplier=multiplier,
                            output_shift=shift, stride=(stride, stride), dilation=(1, 1), padding=pad,
                            output_size=(oh, ow), act_min=act_min, act_max=act_max, depth_multiplier=1)
        x = random_operands(rng, (1, h, w, c), False)
        filters = random_operands(rng, (1, 3, 3, c), rng.random() < 0.2)
        bias = rng.integers(-(1 << 16), 1 << 16, c).astype(np.int64)
        out = kernels.depthwise_conv_2d(x, filters, bias, p)[0].reshape(oh * ow, c)
        padding = int(kernels.requantize(np.zeros(1, np.int64), 0, 0, zp_out, act_min, act_max)[0])
        lines = []
        for g in range(plan.groups):
            chans = out[:, g * cfg.rows:(g + 1) * cfg.rows]
            lines += [[int(v) for v in line] + [padding] * (cfg.cols - chans.shape[1]) for line in chans]
        name = (f"DWCONV {h}x{w}x{c} stride {stride} pad {pad} {'prepadded' if prepadded else 'masked'}, zp {zp_in} "
                f"-> {zp_out}, {clamp} [{act_min}, {act_max}]")
        return Job(name=name, writes=plan.activation_lines(x) + plan.weight_lines(filters),
                   words=[self.fmt.encode(cmd) for cmd in plan.commands],
                   ppu_beats=plan.param_beats(bias, multiplier, shift, zp_out, act_min, act_max), lines=lines)


# Payload layouts -----------------------------------------------------------------------------------------------------

# Testbench -----------------------------------------------------------------------------------------------------------

class TB:
    """Clock, reset, the stream drivers and the output monitor of the datapath, and the host that feeds it jobs.

    Parameters
    ----------
    dut : cocotb handle
    name : str
        Salts the random seed, so tests of one run draw different data.
    mix : str
        One of :data:`MIXES`.
    """

    def __init__(self, dut, name, mix="smooth", config=CONFIG):
        self.dut = dut
        self.config = config
        self.log = logging.getLogger("cocotb.tb")
        self.log.setLevel(logging.INFO)
        seed = [cocotb.RANDOM_SEED, zlib.crc32(name.encode())]   # RANDOM_SEED already differs per test
        self.log.info("stimulus seed %r", seed)
        self.rng = np.random.default_rng(seed)
        self.prng = random.Random(hash(tuple(seed)))  # traffic only: the stimulus draws from self.rng
        model = Datapath(config)  # not elaborated: only its port layouts
        self.has_vector_units = model.has_add and model.has_pool
        self.has_depthwise = model.has_depthwise
        self.stimulus = Stimulus(config, self.rng)

        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value = 1
        dut.error_clear.value = 0

        self.cmd_codec = Codec(payload_shape(model, "cmd"))
        kw = dict(reset=dut.rst, rng=self.prng)
        self.cmd = StreamDriver(dut, "cmd", dut.clk, self.cmd_codec, **kw)
        self.spad_wr = StreamDriver(dut, "spad_wr", dut.clk, payload_shape(model, "spad_wr"), **kw)
        self.ppu_param = StreamDriver(dut, "ppu_param", dut.clk, payload_shape(model, "ppu_param"),
                                      **kw)
        self.add_param = (StreamDriver(dut, "add_param", dut.clk, payload_shape(model, "add_param"),
                                       **kw)
                          if model.has_add else None)
        self.scoreboard = Scoreboard("out")
        self.out = StreamMonitor(dut, "out", dut.clk, payload_shape(model, "out"), reset=dut.rst,
                                 callback=self.scoreboard.observe)
        self.set_traffic(mix)

        self.jobs = []          # every job submitted, in order
        self.line_ends = []     # out lines expected once job i is complete
        self.vectors = 0
        self.words = 0
        self.ppu_beats = 0
        self.add_beats = 0
        self._feeder = None

    def set_traffic(self, mix):
        """Install the pause generators of one of :data:`MIXES`."""
        cmd, spad_wr, param, out = MIXES[mix]
        self.cmd.pause = pauses.TRAFFIC[cmd](self.prng)
        self.spad_wr.pause = pauses.TRAFFIC[spad_wr](self.prng)
        self.ppu_param.pause = pauses.TRAFFIC[param](self.prng)
        if self.add_param is not None:
            self.add_param.pause = pauses.TRAFFIC[param](self.prng)
        self.out.pause = pauses.TRAFFIC[out](self.prng)
        self.log.info("traffic %s: cmd %s, spad_wr %s, params %s, out %s", mix, cmd, spad_wr, param, out)

    async def reset(self, cycles=3):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def status(self):
        """The status outputs, sampled after the next rising edge once the cycle has settled."""
        await RisingEdge(self.dut.clk)
        await ReadOnly()
        dut = self.dut
        return SimpleNamespace(busy=int(dut.busy.value), idle=int(dut.idle.value), error=int(dut.error.value),
                               error_code=ErrorCode(dut.error_code.value.to_unsigned()),
                               busy_cycles=dut.busy_cycles.value.to_unsigned(),
                               active_cycles=dut.active_cycles.value.to_unsigned(),
                               macs=dut.macs.value.to_unsigned())

    # The host --------------------------------------------------------------------------------------------------

    def command(self, word):
        """The ``cmd`` beat of a command word: the word's opcode and all its argument bits, through the layout."""
        fields = self.cmd_codec.unpack(word)
        value = {"opcode": fields["opcode"], "args": {"raw": fields["args"]["raw"]}}
        assert self.cmd_codec.pack(value) == word
        return value

    def expect(self, job):
        """Queue the job's parameter beats and expect its output lines (the datapath takes the beats in command
        order, whenever they are offered)."""
        self.ppu_param.send_many(job.ppu_beats)
        if job.add_beats:
            self.add_param.send_many(job.add_beats)
        for line in job.lines:
            self.scoreboard.expect(line)
        self.ppu_beats += len(job.ppu_beats)
        self.add_beats += len(job.add_beats)
        self.vectors += job.vectors
        self.log.info("job %d: %s: %d lines", len(self.jobs), job.name, len(job.lines))
        self.jobs.append(job)
        self.line_ends.append((self.line_ends[-1] if self.line_ends else 0) + len(job.lines))

    def load(self, job):
        self.spad_wr.send_many({"addr": addr, "data": line} for addr, line in job.writes)

    def send(self, words):
        self.cmd.send_many(self.command(word) for word in words)
        self.words += len(words)

    def submit(self, jobs):
        """Run ``jobs`` in order, job ``i`` in scratchpad half ``i % 2`` (as the stimulus placed it): its data is
        loaded once every line of the job before the previous one is out, its commands sent once its data is in."""
        first = len(self.jobs)
        for job in jobs:
            self.expect(job)
        self._feeder = cocotb.start_soon(self._feed(first, len(self.jobs)))

    async def _feed(self, first, end):
        for g in range(first, end):
            if g >= 2:
                await self.out.wait_for(self.line_ends[g - 2])
            self.load(self.jobs[g])
            await self.spad_wr.wait_idle()
            self.send(self.jobs[g].words)

    # Checking ----------------------------------------------------------------------------------------------------

    async def wait_idle(self, timeout_cycles):
        """Wait until the datapath reports ``idle``; fails after ``timeout_cycles``."""
        for _ in range(timeout_cycles):
            state = await self.status()
            if state.idle:
                return state
        raise AssertionError(f"the datapath is still busy after {timeout_cycles} cycles (hung?)")

    async def finish(self, *, error=False):
        """Wait for every expected line, then check the scoreboard, that nothing more comes, that every stream
        delivered every beat, that the datapath went idle, and its counters."""
        lines = self.scoreboard.expected
        budget = 200 * (lines + self.vectors + self.words) + 5000
        await self.scoreboard.wait_done(self.dut.clk, budget, stall_cycles=4000)
        state = await self.wait_idle(2000)
        await ClockCycles(self.dut.clk, 30)                   # an extra line would show up here
        try:
            self.scoreboard.check(count=lines)
        except AssertionError as error:
            first = self.scoreboard.mismatched[0][0] if self.scoreboard.mismatched else self.scoreboard.observed
            job = next((i for i, end in enumerate(self.line_ends) if first < end), None)
            where = f"job {job}: {self.jobs[job].name}" if job is not None else "after the last job"
            raise AssertionError(f"{error} (line {first} belongs to {where})") from None
        assert self.out.received == lines, f"{self.out.received} lines on out, {lines} expected"
        assert self.cmd.pending == 0 and self.cmd.sent == self.words, "not every command word was taken"
        assert self.spad_wr.pending == 0, "not every scratchpad write was taken"
        assert self.ppu_param.sent == self.ppu_beats and self.ppu_param.pending == 0, \
            f"{self.ppu_param.sent} ppu_param beats taken, {self.ppu_beats} expected"
        if self.add_param is not None:
            assert self.add_param.sent == self.add_beats and self.add_param.pending == 0, \
                f"{self.add_param.sent} add_param beats taken, {self.add_beats} expected"
        state = await self.status()
        assert state.idle and not state.busy, f"not idle at the end: {state}"
        assert state.error == int(error), f"error output {state.error} ({state.error_code}), expected {int(error)}"
        assert state.active_cycles == self.vectors, \
            f"active_cycles {state.active_cycles}, {self.vectors} activation vectors sent"
        assert state.macs == self.vectors * self.config.macs_per_cycle
        self.log.info("%d jobs, %d lines, %d array vectors checked; busy for %d cycles", len(self.jobs), lines,
                      self.vectors, state.busy_cycles)
        return state


# Tests ---------------------------------------------------------------------------------------------------------------

TIMEOUT_MS = 200  # simulated; a hang guard well beyond any test's length


def gemms(tb, count, *, corner=False):
    """``count`` random GEMMs on alternating halves, cycling through the clamp modes and both roundings."""
    offset = int(tb.rng.integers(len(CLAMPS)))
    return [tb.stimulus.gemm(g % 2, clamp=CLAMPS[(g + offset) % len(CLAMPS)], single_rounding=bool((g + offset) % 2),
                             corner=corner, m_tile="random" if g % 3 == 1 else None)
            for g in range(count)]


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
@cocotb.parametrize(mix=list(MIXES))
async def test_random_gemm(dut, mix):
    """Constrained-random tiled GEMMs (partial K and N tiles, several M tiles), random requantisation parameters,
    every clamp mode, both roundings, back to back under each traffic mix."""
    tb = TB(dut, f"gemm-{mix}", mix)
    await tb.reset()
    tb.submit(gemms(tb, 3 * SCALE))
    await tb.finish()


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
async def test_requant_corners(dut):
    """Requantisation corners under random traffic: shifts down to -31 and positive shifts, biases near the int32
    limits (the accumulator sum wraps), zero points -128 and 127, operands mostly -128 and 127."""
    tb = TB(dut, "corners", "random")
    await tb.reset()
    jobs = gemms(tb, 2 + 2 * SCALE, corner=True)
    shifts = {s for job in jobs for beat in job.ppu_beats for s in (lane["shift"] for lane in beat["lanes"])}
    tb.log.info("shifts used: %s", sorted(shifts))
    tb.submit(jobs)
    await tb.finish()


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
async def test_vector_ops(dut):
    """ADD, POOL and DWCONV (new and kept adder parameters, windows that do not divide the lines or exceed them,
    depthwise layers of stride 1 and 2 with masked or prepadded padding, every clamp) interleaved with GEMMs under
    random traffic: the output keeps command order across the units and the requantiser's two inputs."""
    tb = TB(dut, "vector", "random")
    if not tb.has_vector_units:
        tb.log.info("no adder or pooling unit in this configuration (rows > cols)")
        return
    await tb.reset()
    stim, rows = tb.stimulus, tb.config.rows
    jobs = []
    for i in range(SCALE):
        jobs += [
            stim.add(0, [5, 1, rows + 3]),
            stim.pool(1, [(12, 4), (7, 3), (3, 5), (6, 1)]),
            stim.gemm(0, clamp=CLAMPS[i % len(CLAMPS)], single_rounding=bool(i % 2)),
            stim.pool(1, [(9, 9), (10, 4)]),
            stim.add(0, [3, 6]),
            stim.gemm(1, clamp="relu6", single_rounding=not i % 2),
        ]
        if tb.has_depthwise:
            jobs += [
                stim.dwconv(0, stride=1, same=True, prepadded=False, clamp=CLAMPS[(i + 1) % len(CLAMPS)]),
                stim.gemm(1, clamp="none", single_rounding=False),
                stim.dwconv(0, stride=2, same=bool(i % 2), prepadded=True, clamp=CLAMPS[(i + 3) % len(CLAMPS)]),
                stim.pool(1, [(5, 2)]),
                stim.dwconv(0, stride=1 + i % 2, same=False, prepadded=False, clamp="range"),
                stim.add(1, [4]),                      # job i in half i % 2: an even number of jobs per round
            ]
    tb.submit(jobs)
    await tb.finish()


def illegal_word(tb, bad):
    """A random illegal command word of kind ``bad``, made through the hardware layout (the encoder refuses them),
    and the error code it must raise."""
    cfg, rng = tb.config, tb.rng
    spad, acc, tile = cfg.spad_depth, cfg.acc_depth, weight_tile_lines(cfg)
    raw_width = tb.cmd_codec.width - Codec(Opcode).width
    if bad == "opcode":
        opcode = int(rng.choice([v for v in range(16) if v not in {op.value for op in Opcode}]))
        raw = int.from_bytes(rng.bytes(-(-raw_width // 8)), "little") & ((1 << raw_width) - 1)
        return {"opcode": opcode, "args": {"raw": raw}}, ErrorCode.ILLEGAL_OPCODE

    def matmul(act_addr=0, weight_addr=0, acc_addr=0, count=1):
        return {"opcode": Opcode.MATMUL, "args": {"matmul": {"act_addr": act_addr, "weight_addr": weight_addr,
                                                             "acc_addr": acc_addr, "count": count,
                                                             "accumulate": 0}}}

    def requant(acc_addr=0, count=1):
        return {"opcode": Opcode.REQUANT, "args": {"requant": {"acc_addr": acc_addr, "count": count,
                                                               "load_params": 0}}}

    def dwconv(**fields):
        args = dict(act_addr=0, weight_addr=0, height=3, width=3, stride2=0, pad_top=0, pad_bottom=0, pad_left=0,
                    pad_right=0, zero_point=0, load_params=0)
        args.update(fields)
        return {"opcode": Opcode.DWCONV, "args": {"dwconv": args}}

    def pool(addr=0, count=1, window=1):
        return {"opcode": Opcode.POOL, "args": {"pool": {"addr": addr, "count": count, "window": window,
                                                         "mode": PoolMode.MAX, "act_min": -128, "act_max": 127}}}

    if bad == "count":
        choices = [matmul(count=0), requant(count=0)]
        if tb.has_vector_units:
            choices += [pool(count=0), pool(count=3, window=0),
                        {"opcode": Opcode.ADD, "args": {"add": {"a_addr": 0, "b_addr": 0, "count": 0,
                                                                "load_params": 0}}}]
        if tb.has_depthwise:
            choices += [dwconv(height=0), dwconv(width=2), dwconv(height=1, pad_top=1)]
        return choices[int(rng.integers(len(choices)))], ErrorCode.BAD_COUNT
    if bad == "range":
        choices = [matmul(act_addr=spad - 2, count=3), matmul(weight_addr=spad - tile + 1),
                   matmul(acc_addr=acc - 1, count=2), requant(acc_addr=acc - 3, count=4)]
        if tb.has_vector_units:
            choices.append(pool(addr=spad - 1, count=2, window=2))
        if tb.has_depthwise:
            choices += [dwconv(act_addr=spad - 8, height=3, width=3), dwconv(weight_addr=spad - 8)]
        return choices[int(rng.integers(len(choices)))], ErrorCode.BAD_RANGE
    raise ValueError(bad)


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
@cocotb.parametrize(bad=["opcode", "count", "range"])
async def test_illegal_command(dut, bad):
    """An illegal command right behind a GEMM, followed by another GEMM's commands: the first GEMM completes, the
    error and its code are set, every later word is taken and discarded (no hang), the datapath goes idle, nothing
    of the second GEMM runs. After ``error_clear`` a new command stream works."""
    tb = TB(dut, f"illegal-{bad}", "random")
    await tb.reset()
    stim = tb.stimulus
    first = stim.gemm(0, clamp="relu", single_rounding=False)
    discarded = stim.gemm(1, clamp="none", single_rounding=True)
    word, code = illegal_word(tb, bad)
    tb.log.info("illegal command %r, expecting %s", word, code)

    tb.expect(first)                                       # the discarded GEMM takes no parameter beat
    tb.load(first)
    tb.load(discarded)
    await tb.spad_wr.wait_idle()
    tb.send(first.words)
    tb.cmd.send_nowait(word)
    tb.words += 1
    tb.send(discarded.words)
    budget = 200 * (len(first.lines) + first.vectors + tb.words) + 5000
    await with_timeout(tb.cmd.wait_idle(), 10 * budget, "ns")   # every word taken, also after the error
    state = await tb.finish(error=True)
    assert state.error_code == code, f"error code {state.error_code}, expected {code}"

    # error_clear resumes execution with the next commands.
    await RisingEdge(dut.clk)
    dut.error_clear.value = 1
    await RisingEdge(dut.clk)
    dut.error_clear.value = 0
    state = await tb.status()
    assert not state.error and state.error_code == ErrorCode.NONE
    tb.submit([stim.gemm(0, clamp="range", single_rounding=True)])
    state = await tb.finish()
    assert state.error_code == ErrorCode.NONE
