# amaranth: UnusedElaboratable=no
# (the constructor tests create components whose __init__ raises or that are never elaborated)
"""Scratchpad against a Python model of its memory, under random valid gaps, ready gaps and bank conflicts.

Each run drives the write stream and every read-request stream from their own testbenches, with random idle
cycles, holds every response stream's ``ready`` low at random, and records every handshake with its cycle. The
recorded traffic is then replayed through a dictionary model (a read sees the writes accepted in earlier cycles) and
the responses are compared line by line, in order, per port.
"""

import functools
import random

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from haneul.rtl.config import DatapathConfig
from haneul.rtl.scratchpad import ReadResponse, Scratchpad
from haneul.rtl.systolic import ActivationBeat, SystolicArray, WeightBeat

INT8_MIN, INT8_MAX = -128, 127


# Stream testbench helpers ----------------------------------------------------------------------------------------

async def drive(ctx, stream, payloads, rng, gap):
    """Send ``payloads`` on ``stream``, idling a random number of cycles (probability ``gap`` each) before each."""
    for payload in payloads:
        while rng.random() < gap:
            await ctx.tick()
        ctx.set(stream.payload, payload)
        ctx.set(stream.valid, 1)
        await ctx.tick().until(stream.ready)
        ctx.set(stream.valid, 0)


async def sink(ctx, stream, count, rng, gap):
    """Accept ``count`` beats on ``stream``, with ``ready`` low with probability ``gap`` in each cycle."""
    got = 0
    while got < count:
        ctx.set(stream.ready, int(rng.random() >= gap))
        *_, valid, ready = await ctx.tick().sample(stream.valid, stream.ready)
        got += valid and ready
    ctx.set(stream.ready, 0)


class Recorder:
    """Records the handshakes of named streams with their cycle, and checks the stream rules on output streams.

    Parameters
    ----------
    streams : dict of str to stream interface
        The streams to watch.
    outputs : iterable of str
        Names of the streams the DUT transmits: once ``valid`` is high, it must stay high with a stable payload
        until the handshake.
    done : callable
        Called with the recorder after every cycle; the recording stops when it returns true.
    """

    def __init__(self, streams, outputs, done, *, pulses=None, max_cycles=20000):
        self.streams = streams
        self.outputs = set(outputs)
        self.done = done
        self.pulses = pulses or {}
        self.max_cycles = max_cycles
        self.fires = {name: [] for name in [*streams, *self.pulses]}
        self.cycles = 0

    def count(self, name):
        return len(self.fires[name])

    async def testbench(self, ctx):
        names = list(self.streams)
        signals = []
        for name in names:
            s = self.streams[name]
            signals += [s.valid, s.ready, s.payload]
        signals += self.pulses.values()
        held = {}
        while not self.done(self):
            assert self.cycles < self.max_cycles, f"timeout: {({n: len(f) for n, f in self.fires.items()})}"
            values = (await ctx.tick().sample(*signals))[-len(signals):]
            for name, value in zip(self.pulses, values[3 * len(names):]):
                if value:
                    self.fires[name].append((self.cycles, None))
            for i, name in enumerate(names):
                valid, ready, payload = values[3 * i: 3 * i + 3]
                raw = payload.as_value().value
                if name in self.outputs:
                    if name in held:
                        assert valid, f"{name}: valid dropped before the handshake (cycle {self.cycles})"
                        assert raw == held[name], f"{name}: payload changed before the handshake"
                    held.pop(name, None)
                    if valid and not ready:
                        held[name] = raw
                if valid and ready:
                    self.fires[name].append((self.cycles, payload))
            self.cycles += 1


def run(dut, *testbenches):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.run()


def line_of(payload_data, width):
    return [int(payload_data[k]) for k in range(width)]


def random_line(rng, width):
    kind = rng.random()
    if kind < 0.2:
        return [rng.choice((INT8_MIN, INT8_MAX, -1, 0)) for _ in range(width)]
    return [rng.randint(INT8_MIN, INT8_MAX) for _ in range(width)]


# Model -----------------------------------------------------------------------------------------------------------

def replay(rec, dut):
    """Expected responses per port from the recorded writes and read grants (``rd_grant``: a request reads the
    bank in the cycle after its grant, so it sees the writes accepted before the grant's cycle, not in it)."""
    mem = {}
    events = []   # (cycle, order, kind, port, payload): reads of a cycle before its write
    for p in range(dut.read_ports):
        requests, grants = rec.fires[f"req{p}"], rec.fires[f"grant{p}"]
        assert len(grants) == len(requests)
        for (cycle, _), (accepted, payload) in zip(grants, requests):
            assert cycle > accepted, "a request granted in the cycle of its acceptance"
            events.append((cycle, 0, p, payload))
    for cycle, payload in rec.fires["wr"]:
        events.append((cycle, 1, None, payload))
    events.sort(key=lambda e: (e[0], e[1]))
    expected = [[] for _ in range(dut.read_ports)]
    for _, kind, port, payload in events:
        addr = int(payload.addr)
        if kind == 0:
            line = mem.get(addr, [0] * dut.width)
            expected[port].append((list(line), int(payload.last)))
        else:
            old = mem.get(addr, [0] * dut.width)
            new = line_of(payload.data, dut.width)
            if dut.byte_mask:
                mask = int(payload.mask)
                new = [new[k] if mask >> k & 1 else old[k] for k in range(dut.width)]
            mem[addr] = new
    return expected


def grants(dut):
    """The recorder's pulses: each port's ``rd_grant``."""
    return {f"grant{p}": dut.rd_grant[p] for p in range(dut.read_ports)}


def check_responses(rec, dut):
    expected = replay(rec, dut)
    for p in range(dut.read_ports):
        got = [(line_of(payload.data, dut.width), int(payload.last)) for _, payload in rec.fires[f"resp{p}"]]
        assert len(got) == len(expected[p])
        for i, (g, e) in enumerate(zip(got, expected[p])):
            assert g == e, f"port {p}, response {i}: got {g}, expected {e}"


def simulate(dut, writes, reads, rng, *, wr_gap, req_gap, resp_gap):
    """Run ``writes`` (payload dicts) and ``reads[p]`` (payload dicts per port) concurrently; return the recording."""
    streams = {"wr": dut.wr}
    for p in range(dut.read_ports):
        streams[f"req{p}"] = dut.rd_req[p]
        streams[f"resp{p}"] = dut.rd_resp[p]

    def done(rec):
        return (rec.count("wr") == len(writes) and
                all(rec.count(f"resp{p}") == len(reads[p]) for p in range(dut.read_ports)))

    rec = Recorder(streams, [f"resp{p}" for p in range(dut.read_ports)], done, pulses=grants(dut))
    seeds = [rng.getrandbits(32) for _ in range(1 + 2 * dut.read_ports)]
    tbs = [rec.testbench,
           functools.partial(drive, stream=dut.wr, payloads=writes, rng=random.Random(seeds[0]), gap=wr_gap)]
    for p in range(dut.read_ports):
        tbs.append(functools.partial(drive, stream=dut.rd_req[p], payloads=reads[p],
                                     rng=random.Random(seeds[1 + 2 * p]), gap=req_gap))
        tbs.append(functools.partial(sink, stream=dut.rd_resp[p], count=len(reads[p]),
                                     rng=random.Random(seeds[2 + 2 * p]), gap=resp_gap))
    run(dut, *tbs)
    return rec


# Constructor -----------------------------------------------------------------------------------------------------

def test_defaults():
    cfg = DatapathConfig()
    sp = Scratchpad(cfg)
    assert (sp.width, sp.depth, sp.banks, sp.read_ports) == (cfg.rows, cfg.spad_depth, cfg.spad_banks, 2)
    assert sp.addr_width == 11 and sp.half_depth == 1024 and sp.latency == 5 and sp.fifo_depth == 5


@pytest.mark.parametrize("kwargs, error", [
    (dict(config=16), TypeError),
    (dict(width=0), TypeError),
    (dict(width=True), TypeError),
    (dict(depth=12), ValueError),
    (dict(depth=1, banks=1), ValueError),
    (dict(banks=3), ValueError),
    (dict(depth=4, banks=8), ValueError),
    (dict(read_ports=0), TypeError),
    (dict(byte_mask=1), TypeError),
])
def test_constructor_validation(kwargs, error):
    with pytest.raises(error):
        Scratchpad(**kwargs)


def test_connects_to_systolic_array():
    cfg = DatapathConfig(rows=4, cols=4)
    sp = Scratchpad(cfg, depth=16, banks=2)
    array = SystolicArray(cfg)
    assert ReadResponse(cfg, cfg.rows) == ActivationBeat(cfg)
    assert ReadResponse(cfg, cfg.cols).members["data"] == WeightBeat(cfg)
    m = Module()
    m.submodules.sp = sp
    m.submodules.array = array
    wiring.connect(m, sp.rd_resp[0], array.act)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(width=4, depth=8, banks=1, read_ports=1, byte_mask=True),
    dict(width=3, depth=8, banks=8, read_ports=3),
])
def test_verilog(kwargs):
    assert "module" in verilog.convert(Scratchpad(**kwargs), name="scratchpad")


# Traffic ---------------------------------------------------------------------------------------------------------

CASES = {
    # name: constructor arguments, address space, gaps (write, request, response)
    "1port-nogaps":  (dict(width=4, depth=16, banks=1, read_ports=1), 16, (0.0, 0.0, 0.0)),
    "1port-gaps":    (dict(width=4, depth=16, banks=2, read_ports=1, byte_mask=True), 16, (0.3, 0.3, 0.4)),
    "2port-nogaps":  (dict(width=4, depth=16, banks=4), 8, (0.0, 0.0, 0.0)),
    "2port-gaps":    (dict(width=4, depth=16, banks=4, byte_mask=True), 16, (0.4, 0.3, 0.5)),
    "3port-hot":     (dict(width=2, depth=8, banks=2, read_ports=3), 3, (0.1, 0.2, 0.3)),
    "2port-1bank":   (dict(width=8, depth=32, banks=1), 32, (0.5, 0.1, 0.6)),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", list(CASES))
def test_random_traffic(case, seed):
    kwargs, space, (wr_gap, req_gap, resp_gap) = CASES[case]
    rng = random.Random(f"{case}-{seed}")
    dut = Scratchpad(DatapathConfig(), **kwargs)
    addrs = rng.sample(range(dut.depth), space)
    writes = []
    for _ in range(250):
        w = {"addr": rng.choice(addrs), "data": random_line(rng, dut.width)}
        if dut.byte_mask:
            w["mask"] = rng.choice([(1 << dut.width) - 1, rng.getrandbits(dut.width)])
        writes.append(w)
    reads = [[{"addr": rng.choice(addrs), "last": rng.getrandbits(1)} for _ in range(200)]
             for _ in range(dut.read_ports)]
    rec = simulate(dut, writes, reads, rng, wr_gap=wr_gap, req_gap=req_gap, resp_gap=resp_gap)
    check_responses(rec, dut)
    if wr_gap == req_gap == resp_gap == 0 and dut.read_ports == 1:
        # One port alone, never stalled: one request per cycle.
        cycles = [c for c, _ in rec.fires["req0"]]
        assert cycles == list(range(cycles[0], cycles[0] + len(cycles)))


def test_latency_and_throughput():
    """One port, consumer always ready: a request per cycle, each response in the cycle after its request."""
    dut = Scratchpad(DatapathConfig(), width=4, depth=8, banks=2, read_ports=1)
    rng = random.Random(1)
    reads = [[{"addr": a % 8, "last": a & 1} for a in range(40)]]
    rec = simulate(dut, [], reads, rng, wr_gap=0, req_gap=0, resp_gap=0)
    req = [c for c, _ in rec.fires["req0"]]
    resp = [c for c, _ in rec.fires["resp0"]]
    assert req == list(range(req[0], req[0] + 40))
    assert resp == [c + dut.latency for c in req]
    assert [int(p.last) for _, p in rec.fires["resp0"]] == [a & 1 for a in range(40)]


def test_double_buffering():
    """The load side fills one half while two read ports stream the other at full rate; then the halves swap.

    In a 4-bank scratchpad half 0 is banks 0 and 1, half 1 banks 2 and 3. Each read port streams one bank of the
    front half while the writer fills the back half, one beat per cycle on all three streams: nothing contends, so
    no stream ever waits, and the lines read are the ones written before the swap.
    """
    dut = Scratchpad(DatapathConfig(), width=4, depth=32, banks=4)
    rng = random.Random(2)
    half, bank = dut.half_depth, dut.depth // dut.banks
    images = [{a: random_line(rng, dut.width) for a in range(dut.depth)} for _ in range(3)]
    # Per phase: (writes, reads of port 0, reads of port 1); the front half is 0 then 1.
    phases = []
    for front, image in ((None, images[0]), (0, images[1]), (1, images[2])):
        back = 0 if front is None else 1 - front
        writes = [{"addr": back * half + a, "data": image[back * half + a]} for a in range(half)]
        reads = [[], []]
        if front is not None:
            for p in range(2):
                base = front * half + p * bank
                reads[p] = [{"addr": base + (i % bank), "last": i % bank == bank - 1} for i in range(half)]
        phases.append((writes, reads))

    streams = {"wr": dut.wr, "req0": dut.rd_req[0], "req1": dut.rd_req[1],
               "resp0": dut.rd_resp[0], "resp1": dut.rd_resp[1]}
    n_writes = sum(len(w) for w, _ in phases)
    n_reads = sum(len(r[0]) for _, r in phases)
    rec = Recorder(streams, ["resp0", "resp1"], pulses=grants(dut), done=
                   lambda r: r.count("wr") == n_writes and r.count("resp0") == r.count("resp1") == n_reads)

    async def controller(ctx):
        ctx.set(dut.rd_resp[0].ready, 1)
        ctx.set(dut.rd_resp[1].ready, 1)
        for writes, reads in phases:          # the swap is the step from one phase to the next
            for i, w in enumerate(writes):
                ctx.set(dut.wr.payload, w)
                ctx.set(dut.wr.valid, 1)
                for p in range(2):
                    ctx.set(dut.rd_req[p].valid, bool(reads[p]))
                    if reads[p]:
                        ctx.set(dut.rd_req[p].payload, reads[p][i])
                *_, wr_rdy, rdy0, rdy1 = await ctx.tick().sample(dut.wr.ready, dut.rd_req[0].ready,
                                                                dut.rd_req[1].ready)
                assert wr_rdy and (rdy0 or not reads[0]) and (rdy1 or not reads[1]), "a stream waited"
        ctx.set(dut.wr.valid, 0)
        ctx.set(dut.rd_req[0].valid, 0)
        ctx.set(dut.rd_req[1].valid, 0)

    run(dut, rec.testbench, controller)
    check_responses(rec, dut)
    for p in range(2):
        got = [line_of(payload.data, dut.width) for _, payload in rec.fires[f"resp{p}"]]
        expected = [images[0][r["addr"]] for r in phases[1][1][p]] + [images[1][r["addr"]] for r in phases[2][1][p]]
        assert got == expected
        # Every response follows its request by exactly one cycle: no stall anywhere.
        assert [c for c, _ in rec.fires[f"resp{p}"]] == [c + dut.latency for c, _ in rec.fires[f"req{p}"]]


def test_bank_conflict_round_robin():
    """Two ports hammering the same bank share it: each gets every other cycle, and no request is lost."""
    dut = Scratchpad(DatapathConfig(), width=2, depth=8, banks=2)
    rng = random.Random(4)
    reads = [[{"addr": a % 4, "last": p} for a in range(30)] for p in range(2)]
    rec = simulate(dut, [], reads, rng, wr_gap=0, req_gap=0, resp_gap=0)
    check_responses(rec, dut)
    cycles = sorted(c for p in range(2) for c, _ in rec.fires[f"grant{p}"])
    assert len(set(cycles)) == 60                       # one grant per cycle for the shared bank ...
    assert cycles[-1] - cycles[0] == 59                 # ... and in every cycle
    c0 = [c for c, _ in rec.fires["grant0"]]
    assert all(b - a == 2 for a, b in zip(c0, c0[1:]))  # alternating


def test_default_configuration():
    """The full-size default scratchpad (2048 lines of 16 int8, 4 banks, 2 ports), short random traffic."""
    dut = Scratchpad()
    rng = random.Random(6)
    addrs = [rng.randrange(dut.depth) for _ in range(12)] + [0, dut.depth - 1, dut.half_depth - 1, dut.half_depth]
    writes = [{"addr": rng.choice(addrs), "data": random_line(rng, dut.width)} for _ in range(60)]
    reads = [[{"addr": rng.choice(addrs), "last": rng.getrandbits(1)} for _ in range(60)] for _ in range(2)]
    rec = simulate(dut, writes, reads, rng, wr_gap=0.2, req_gap=0.2, resp_gap=0.3)
    check_responses(rec, dut)
