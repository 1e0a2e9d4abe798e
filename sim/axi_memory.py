"""An AXI4 subordinate memory for Amaranth simulator testbenches (``amaranth.sim``), with random stalls on every
channel, read and write latency, error injection and protocol checks.

::

    mem = AxiMemory(dut.bus, size=1 << 16, rng=random.Random(1), gaps=0.3)
    sim.add_testbench(mem.serve, background=True)
    ...
    mem.check()      # raises AssertionError listing protocol violations seen on the bus

The model accepts any number of outstanding bursts on both channels and answers in order (one ID). ``gaps`` is the
probability that a ready (``arready``, ``awready``, ``wready``) is low or that a valid (``rvalid``, ``bvalid``) is
held back in a cycle; ``latency`` is the range of cycles between a burst's address and its first R beat (reads) or
between its last W beat and B (writes). ``errors`` is a list of ``(start, end, resp)``: a beat whose bus word lies in
``[start, end)`` is answered with ``resp`` (reads: that beat's ``rresp``; writes: the burst's ``bresp``, and the
burst writes nothing). Addresses at or above ``size`` answer ``DECERR``.

Checked on the manager's side: a valid is not withdrawn and its payload does not change before the handshake;
bursts are INCR of full bus words (``AxSIZE``), within a 4 KiB page; ``wlast`` is on the last beat of each write
burst and only there. :attr:`bursts` records ``("R" | "W", addr, beats)`` of every burst, in address-channel order.
"""

import collections
import random

from haneul.rtl.axi import Burst, Resp

__all__ = ["AxiMemory"]


class AxiMemory:
    """See the module documentation.

    Parameters
    ----------
    bus : AXI4 interface (the ``bus`` port of a manager component)
    size : int
        Bytes of memory, from address 0.
    rng : random.Random or int, optional
    gaps : float or dict
        Stall probability per cycle, for every channel or per channel name (``ar``, ``r``, ``aw``, ``w``, ``b``).
    latency : (int, int)
        Inclusive range of the read and write-response latencies, in cycles.
    errors : list of (int, int, Resp)
    """

    CHANNELS = ("ar", "r", "aw", "w", "b")

    def __init__(self, bus, *, size, rng=None, gaps=0.0, latency=(1, 4), errors=()):
        self.bus = bus
        self.size = size
        self.mem = bytearray(size)
        self.rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        if not isinstance(gaps, dict):
            gaps = {ch: gaps for ch in self.CHANNELS}
        self.gaps = {ch: gaps.get(ch, 0.0) for ch in self.CHANNELS}
        self.latency = latency
        self.errors = list(errors)
        self.nbytes = len(bus.wdata) // 8
        self.violations = []
        self.bursts = []
        self.cycle = 0
        self.reads = collections.deque()     # (ready cycle, addr, beats)
        self.writes = collections.deque()    # (addr, beats) waiting for W beats
        self.wbeats = collections.deque()    # (data, strb, last)
        self.bresps = collections.deque()    # (ready cycle, resp)
        self.max_read_outstanding = 0

    # Memory access ----------------------------------------------------------------------------------------------

    def write(self, addr, data):
        self.mem[addr:addr + len(data)] = bytes(data)

    def read(self, addr, length):
        return bytes(self.mem[addr:addr + length])

    def _resp(self, word_addr):
        for start, end, resp in self.errors:
            if start <= word_addr + self.nbytes - 1 and word_addr < end:
                return resp
        if word_addr + self.nbytes > self.size:
            return Resp.DECERR
        return Resp.OKAY

    def check(self):
        """Raise :exc:`AssertionError` if the manager broke the protocol."""
        if self.violations:
            raise AssertionError(f"{len(self.violations)} AXI protocol violation(s): " + "; ".join(self.violations[:5]))

    def _violation(self, text):
        self.violations.append(f"cycle {self.cycle}: {text}")

    def _check_burst(self, kind, addr, length, size, burst):
        if int(getattr(burst, "value", burst)) != Burst.INCR.value:
            self._violation(f"{kind} burst type {burst}, not INCR")
        if 1 << size != self.nbytes:
            self._violation(f"{kind} size {1 << size} bytes, not the bus width {self.nbytes}")
        if addr % self.nbytes:
            self._violation(f"{kind} address {addr:#x} not aligned to the bus width")
        if (addr & 0xfff) + (length + 1) * self.nbytes > 0x1000:
            self._violation(f"{kind} burst at {addr:#x} of {length + 1} beats crosses a 4 KiB boundary")

    # The simulation process -------------------------------------------------------------------------------------

    def _stall(self, ch):
        return self.rng.random() < self.gaps[ch]

    async def serve(self, ctx):
        """The testbench process (add with ``sim.add_testbench(mem.serve, background=True)``)."""
        bus = self.bus
        sigs = [bus.arvalid, bus.araddr, bus.arlen, bus.arsize, bus.arburst,
                bus.rready,
                bus.awvalid, bus.awaddr, bus.awlen, bus.awsize, bus.awburst,
                bus.wvalid, bus.wdata, bus.wstrb, bus.wlast,
                bus.bready]
        r_cur = None       # (addr, beat, beats) of the R beat on the bus
        b_cur = None
        held = {}          # channel -> payload offered without handshake
        read_beat = None   # (addr, beats, next beat index)
        while True:
            arready = not self._stall("ar")
            awready = not self._stall("aw")
            wready = not self._stall("w")
            ctx.set(bus.arready, arready)
            ctx.set(bus.awready, awready)
            ctx.set(bus.wready, wready)
            # R: present the next beat when its burst is due.
            if r_cur is None and read_beat is None and self.reads and self.reads[0][0] <= self.cycle:
                _, addr, beats = self.reads.popleft()
                read_beat = (addr, beats, 0)
            if r_cur is None and read_beat is not None and not self._stall("r"):
                addr, beats, index = read_beat
                word = addr + index * self.nbytes
                resp = self._resp(word)
                data = self.read(word, self.nbytes) if resp == Resp.OKAY else bytes(self.nbytes)
                r_cur = (int.from_bytes(data, "little"), resp, index == beats - 1)
                read_beat = (addr, beats, index + 1) if index + 1 < beats else None
            ctx.set(bus.rvalid, r_cur is not None)
            if r_cur is not None:
                ctx.set(bus.rdata, r_cur[0])
                ctx.set(bus.rresp, r_cur[1])
                ctx.set(bus.rlast, r_cur[2])
            if b_cur is None and self.bresps and self.bresps[0][0] <= self.cycle and not self._stall("b"):
                b_cur = self.bresps.popleft()[1]
            ctx.set(bus.bvalid, b_cur is not None)
            if b_cur is not None:
                ctx.set(bus.bresp, b_cur)

            *_, arvalid, araddr, arlen, arsize, arburst, rready, awvalid, awaddr, awlen, awsize, awburst, \
                wvalid, wdata, wstrb, wlast, bready = await ctx.tick().sample(*sigs)
            self.cycle += 1

            for ch, valid, payload in (("ar", arvalid, (araddr, arlen, arsize, arburst)),
                                       ("aw", awvalid, (awaddr, awlen, awsize, awburst)),
                                       ("w", wvalid, (wdata, wstrb, wlast))):
                if ch in held and (not valid or held[ch] != payload):
                    self._violation(f"{ch}valid withdrawn or payload changed before the handshake")
                held.pop(ch, None)
                ready = {"ar": arready, "aw": awready, "w": wready}[ch]
                if valid and not ready:
                    held[ch] = payload
            if arvalid and arready:
                self._check_burst("read", araddr, arlen, arsize, arburst)
                self.bursts.append(("R", araddr, arlen + 1))
                delay = self.rng.randint(*self.latency)
                self.reads.append((self.cycle + delay, araddr, arlen + 1))
            if r_cur is not None and rready:
                r_cur = None
            if awvalid and awready:
                self._check_burst("write", awaddr, awlen, awsize, awburst)
                self.bursts.append(("W", awaddr, awlen + 1))
                self.writes.append((awaddr, awlen + 1))
            if wvalid and wready:
                self.wbeats.append((wdata, wstrb, wlast))
            if b_cur is not None and bready:
                b_cur = None
            # Complete writes whose beats have all arrived.
            while self.writes and len(self.wbeats) >= self.writes[0][1]:
                addr, beats = self.writes.popleft()
                resp = Resp.OKAY
                words = []
                for index in range(beats):
                    data, strb, last = self.wbeats.popleft()
                    if bool(last) != (index == beats - 1):
                        self._violation(f"wlast {last} on beat {index} of a {beats}-beat burst at {addr:#x}")
                    word = addr + index * self.nbytes
                    beat_resp = self._resp(word)
                    if beat_resp != Resp.OKAY:
                        resp = beat_resp
                    words.append((word, data, strb))
                if resp == Resp.OKAY:
                    for word, data, strb in words:
                        raw = data.to_bytes(self.nbytes, "little")
                        for k in range(self.nbytes):
                            if strb >> k & 1:
                                self.mem[word + k] = raw[k]
                self.bresps.append((self.cycle + self.rng.randint(*self.latency), resp))
            outstanding = sum(beats for _, _, beats in self.reads) + (read_beat[1] - read_beat[2] if read_beat else 0)
            self.max_read_outstanding = max(self.max_read_outstanding, outstanding)
