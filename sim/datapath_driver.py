"""Runs jobs through :class:`haneul.rtl.datapath.Datapath` in the Amaranth simulator.

:class:`DatapathDriver` plays the DMA and the command processor around the datapath: it loads the scratchpad, sends
command words and parameter beats, takes the output lines, checks the stream rules of ``out`` and measures the
run. A *job* is anything with these attributes (:class:`DatapathJob` is the plain one; the tests add their golden
results to their own job classes)::

    writes      [(line address, line)]   scratchpad loads (``line``: ``rows`` int8 values)
    words       [int]                    command words (``CommandFormat.encode``)
    params      [beat]                   ``ppu_param`` beats (values of ``ppu.Params``), optional
    add_params  [beat]                   ``add_param`` beats (values of ``eltwise.Params``), optional
    out_lines   int                      lines the job's commands send on ``out``

Order of the testbenches: job ``g`` is loaded once the output of job ``g - 2`` is complete (so consecutive jobs can
alternate between the two halves of the scratchpad), and its command words are sent once its data is loaded;
parameter beats are offered as early as the datapath takes them. Every input stream can have random gaps in
``valid`` and ``out`` random gaps in ``ready`` (probabilities per cycle, :data:`STREAMS`).

::

    from haneul.sim.datapath_driver import DatapathDriver, DatapathJob

    plan = plan_gemm(m, k, n, config)
    job = DatapathJob(writes=plan.activation_lines(a) + plan.weight_lines(w),
                      words=[fmt.encode(c) for c in plan.commands],
                      params=plan.param_beats(bias, multiplier, shift, zero_point, act_min, act_max),
                      out_lines=plan.out_lines)
    run = DatapathDriver(config, [job]).run()
    result = plan.assemble(run.job_lines[0])
    run.cycles, run.busy_cycles, run.active_cycles, run.macs
"""

import dataclasses

import numpy as np
from amaranth.sim import Simulator

from haneul.rtl.commands import CommandError, CommandFormat, Matmul, weight_tile_lines
from haneul.rtl.config import DatapathConfig
from haneul.rtl.datapath import Datapath

__all__ = ["STREAMS", "DatapathJob", "DatapathRun", "DatapathDriver", "DriverError"]

#: The streams that can have gaps: the inputs (gaps in ``valid``) and ``out`` (gaps in ``ready``).
STREAMS = ("cmd", "spad_wr", "ppu_param", "add_param", "out")


class DriverError(AssertionError):
    """The datapath broke a stream rule, produced more output than expected, or did not finish in time."""


@dataclasses.dataclass
class DatapathJob:
    """One job for :class:`DatapathDriver`: scratchpad loads, command words, parameter beats and the number of
    output lines its commands produce."""
    writes: list
    words: list
    params: list = dataclasses.field(default_factory=list)
    out_lines: int = 0
    add_params: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class DatapathRun:
    """What :meth:`DatapathDriver.run` measured.

    Attributes
    ----------
    lines : list of list of int
        Every line taken from ``out``, in order (``cols`` signed values each).
    job_lines : list
        The same lines split by job (``out_lines`` each).
    first_cmd_cycle : int or None
        Cycle (from the start of the simulation) in which the first command word was accepted on ``cmd``.
    last_out_cycle : int or None
        Cycle in which the last line was accepted on ``out``.
    cycles : int or None
        ``last_out_cycle - first_cmd_cycle + 1``: first command to last output line, both cycles included.
    first_active_cycle, last_active_cycle : int or None
        Cycles in which the array took its first and its last activation vector.
    array_span : int or None
        ``last_active_cycle - first_active_cycle + 1``; equal to ``active_cycles`` when the array never waited.
    busy_cycles, active_cycles, macs : int
        The datapath's counters, read once the run is over (they count from reset, so they cover the whole run).
    error : int
        The datapath's ``error`` output at the end.
    error_code : ErrorCode
        Its ``error_code`` output at the end.
    sim_cycles : int
        Cycles simulated (including the loads before the first command and the idle cycles at the end).
    trace : list of tuple
        Per simulated cycle: ``(busy, active_cycles, error, error_code)``.
    """
    lines: list
    job_lines: list
    first_cmd_cycle: int | None
    last_out_cycle: int | None
    first_active_cycle: int | None
    last_active_cycle: int | None
    busy_cycles: int
    active_cycles: int
    macs: int
    error: int
    error_code: object
    sim_cycles: int
    trace: list

    @property
    def cycles(self):
        if self.first_cmd_cycle is None or self.last_out_cycle is None:
            return None
        return self.last_out_cycle - self.first_cmd_cycle + 1

    @property
    def array_span(self):
        if self.first_active_cycle is None:
            return None
        return self.last_active_cycle - self.first_active_cycle + 1


class DatapathDriver:
    """Runs ``jobs`` through a :class:`~haneul.rtl.datapath.Datapath` in the Amaranth simulator.

    Parameters
    ----------
    config : DatapathConfig
        Sizes of the datapath to build.
    jobs : list
        Jobs (:class:`DatapathJob` or anything with the same attributes), executed in order.
    gaps : dict, optional
        Probability of a gap in a cycle, per stream name (:data:`STREAMS`); missing streams have none. A gap on an
        input stream holds ``valid`` low for a cycle before a beat; a gap on ``out`` holds ``ready`` low.
    rng : numpy.random.Generator, optional
        Source of the gaps. Default: ``numpy.random.default_rng(seed)``. It is drawn from once per stream and
        cycle of a wait, gap or not, so a given generator state always gives the same run.
    seed : int
        Seed of the default ``rng``.
    extra_words : sequence of int
        Command words sent after those of the last job.
    max_cycles : int, optional
        The run fails with :class:`DriverError` after this many cycles. Default: a generous bound from the jobs.
    datapath : Datapath, optional
        A datapath to run instead of ``Datapath(config)`` (for example one built without the vector units).

    Attributes
    ----------
    dut : Datapath
        The datapath (may be replaced before :meth:`run`).
    out : list
        The output lines taken so far (grows while the simulation runs).
    trace : list
        Per cycle so far: ``(busy, active_cycles, error, error_code)``.
    cum : numpy.ndarray
        Cumulative output lines per job: the lines of job ``g`` are ``out[cum[g]:cum[g + 1]]``.
    """

    def __init__(self, config, jobs, *, gaps=None, rng=None, seed=0, extra_words=(), max_cycles=None,
                 datapath=None):
        if not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        gaps = dict(gaps or {})
        for name, p in gaps.items():
            if name not in STREAMS:
                raise ValueError(f"Unknown stream {name!r}: gaps can be given for {', '.join(STREAMS)}")
            if not 0 <= p < 1:
                raise ValueError(f"Gap probability of {name} must be in [0, 1), not {p!r}")
        self.cfg = config
        self.dut = Datapath(config) if datapath is None else datapath
        self.jobs = list(jobs)
        self.gaps = {name: gaps.get(name, 0.0) for name in STREAMS}
        self.rng = np.random.default_rng(seed) if rng is None else rng
        self.extra_words = list(extra_words)
        self.max_cycles = self._default_max_cycles() if max_cycles is None else max_cycles
        self.loaded = 0
        self.out = []
        self.cycles = 0
        self.trace = []
        self.done = False
        self.cum = np.cumsum([0] + [int(j.out_lines) for j in self.jobs])
        self._first_cmd = self._last_out = None
        self._counters = None

    def _default_max_cycles(self):
        fmt = CommandFormat(self.cfg)
        tile = weight_tile_lines(self.cfg)
        work = 0
        for job in self.jobs:
            work += len(job.writes) + len(getattr(job, "params", ())) + len(getattr(job, "add_params", ()))
            work += int(job.out_lines)
            for word in job.words:
                work += 32
                try:
                    cmd = fmt.decode(word)
                except CommandError:
                    continue
                if isinstance(cmd, Matmul):
                    work += cmd.count + tile
        work += 32 * len(self.extra_words)
        return 20000 + 4 * work

    # Stream helpers --------------------------------------------------------------------------------------------

    def gap(self, stream):
        """Whether ``stream`` has a gap in this cycle (one draw from ``rng``)."""
        return self.rng.random() < self.gaps[stream]

    async def send(self, ctx, stream, payload, name, raw=False):
        """Send one beat on the input stream ``stream`` (the port; ``name`` its gap key), after random gaps.

        ``raw``: ``payload`` is an integer for the payload's bits (command words)."""
        while self.gap(name):
            await ctx.tick()
        ctx.set(stream.payload.as_value() if raw else stream.payload, payload)
        ctx.set(stream.valid, 1)
        await ctx.tick().until(stream.ready)
        ctx.set(stream.valid, 0)

    async def wait(self, ctx, condition):
        """Wait, a cycle at a time, until ``condition()`` holds."""
        while not condition():
            if self.done:
                raise DriverError("the simulation ended while a testbench was waiting")
            await ctx.tick()

    # Testbenches -----------------------------------------------------------------------------------------------

    async def loader(self, ctx):
        """Scratchpad writes of job ``g``, once the output of job ``g - 2`` is complete."""
        for g, job in enumerate(self.jobs):
            if g >= 2:
                await self.wait(ctx, lambda: len(self.out) >= self.cum[g - 1])
            for addr, line in job.writes:
                await self.send(ctx, self.dut.spad_wr, {"addr": addr, "data": [int(v) for v in line]}, "spad_wr")
            self.loaded = g + 1

    async def commander(self, ctx):
        """Command words of job ``g``, once its data is loaded; then :attr:`extra_words`."""
        for g, job in enumerate(self.jobs):
            await self.wait(ctx, lambda: self.loaded > g)
            for word in job.words:
                await self.send(ctx, self.dut.cmd, word, "cmd", raw=True)
        for word in self.extra_words:
            await self.send(ctx, self.dut.cmd, word, "cmd", raw=True)

    async def param_driver(self, ctx):
        for job in self.jobs:
            for beat in getattr(job, "params", ()):
                await self.send(ctx, self.dut.ppu_param, beat, "ppu_param")

    async def add_param_driver(self, ctx):
        for job in self.jobs:
            for beat in getattr(job, "add_params", ()):
                await self.send(ctx, self.dut.add_param, beat, "add_param")

    async def sink(self, ctx):
        """Takes the ``out`` lines, checks the stream rules, samples the status in every cycle and ends the run
        once every line is out and the datapath has been idle for 8 cycles."""
        dut, cols = self.dut, self.cfg.cols
        total = int(self.cum[-1])
        held = None
        idle_run = 0
        status = [dut.busy, dut.active_cycles, dut.error, dut.error_code, dut.idle, dut.cmd.valid, dut.cmd.ready]
        while True:
            if self.cycles >= self.max_cycles:
                raise DriverError(f"timeout after {self.cycles} cycles: {len(self.out)} of {total} lines")
            ctx.set(dut.out.ready, int(not self.gap("out")))
            sampled = await ctx.tick().sample(dut.out.valid, dut.out.ready, dut.out.payload, *status)
            valid, ready, payload, busy, active, error, code, idle, cmd_valid, cmd_ready = sampled[-10:]
            if idle != (not busy):
                raise DriverError(f"cycle {self.cycles}: idle is not ~busy")
            self.trace.append((busy, active, error, code))
            if cmd_valid and cmd_ready and self._first_cmd is None:
                self._first_cmd = self.cycles
            value = payload.as_value().value
            if held is not None:
                if not valid:
                    raise DriverError(f"cycle {self.cycles}: out: valid dropped before the handshake")
                if value != held:
                    raise DriverError(f"cycle {self.cycles}: out: payload changed before the handshake")
            held = value if valid and not ready else None
            if valid and ready:
                if len(self.out) >= total:
                    raise DriverError(f"cycle {self.cycles}: out: more lines than the commands produce ({total})")
                self.out.append([int(payload[i]) for i in range(cols)])
                self._last_out = self.cycles
            self.cycles += 1
            idle_run = idle_run + 1 if (len(self.out) == total and not busy) else 0
            if idle_run >= 8:
                break
        self._counters = tuple(ctx.get(s) for s in (dut.busy_cycles, dut.active_cycles, dut.macs, dut.error,
                                                    dut.error_code))
        self.done = True

    def testbenches(self):
        """The testbench coroutines of a run (the ``add_param`` driver only when a job has adder beats)."""
        benches = [self.loader, self.commander, self.param_driver, self.sink]
        if any(getattr(job, "add_params", None) for job in self.jobs):
            benches.append(self.add_param_driver)
        return benches

    # Running ---------------------------------------------------------------------------------------------------

    def run(self, extra_testbenches=()):
        """Simulate until every output line is out and the datapath is idle; return a :class:`DatapathRun`.

        ``extra_testbenches``: more testbench coroutines (``async def tb(ctx)``) to run alongside, e.g. monitors.
        """
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)
        for tb in list(self.testbenches()) + list(extra_testbenches):
            sim.add_testbench(tb)
        sim.run()
        return self.result()

    def result(self):
        """The :class:`DatapathRun` of a finished simulation."""
        if self._counters is None:
            raise DriverError("the simulation has not finished")
        busy_cycles, active_cycles, macs, error, code = self._counters
        actives = [t[1] for t in self.trace]
        first_active = next((i for i, a in enumerate(actives) if a), None)
        last_active = actives.index(actives[-1]) - 1 if first_active is not None else None
        if first_active is not None:
            first_active -= 1
        return DatapathRun(
            lines=list(self.out),
            job_lines=[self.out[self.cum[g]:self.cum[g + 1]] for g in range(len(self.jobs))],
            first_cmd_cycle=self._first_cmd, last_out_cycle=self._last_out,
            first_active_cycle=first_active, last_active_cycle=last_active,
            busy_cycles=int(busy_cycles), active_cycles=int(active_cycles), macs=int(macs),
            error=int(error), error_code=code, sim_cycles=self.cycles, trace=list(self.trace))
