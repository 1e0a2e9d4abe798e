"""Drivers and monitors for ``amaranth.lib.stream`` ports of Amaranth-generated Verilog.

A stream port ``name`` of a component becomes three Verilog ports: ``<name>__valid``, ``<name>__ready`` and the flat
``<name>__payload`` vector (see :mod:`haneul.sim.cocotb.payload`). A *transfer* happens on a rising clock edge on which
``valid`` and ``ready`` are both high.

Sampling discipline (the same on Icarus and Verilator)
------------------------------------------------------
Right after a rising edge every endpoint writes what it drives for the new cycle; then it waits for ``ReadOnly()``
(all values of the cycle settled) and samples ``valid``/``ready``. If both are high, the transfer happens at the next
edge. Reading at ``ReadOnly`` rather than at the edge itself avoids the race between the testbench and the DUT's
registers, which event-driven (Icarus) and cycle-based (Verilator) simulators resolve differently. Combinational
paths from ``ready`` to ``valid`` (or from ``result.ready`` to ``act.ready``, as in the systolic array) are seen
correctly because all writes of the cycle are applied before ``ReadOnly``.

Protocol
--------
The drivers keep ``valid`` high and the payload unchanged until a beat is accepted. A :class:`StreamMonitor` checks the
same rule on the DUT's outputs (``check_protocol=True``): once ``valid`` is offered it must not be withdrawn, nor the
payload changed, until the transfer. A violation fails the test.
"""

import collections
import logging
import random

import cocotb
from cocotb.triggers import Event, ReadOnly, RisingEdge

from .payload import Codec

__all__ = ["StreamDriver", "StreamMonitor", "StreamProtocolError"]


class StreamProtocolError(AssertionError):
    """A stream broke the valid/ready rules (valid withdrawn or payload changed before the transfer)."""


def _handle(dut, name):
    try:
        return getattr(dut, name)
    except AttributeError:
        raise AttributeError(f"The DUT has no port {name!r}") from None


def _pause_iter(pause):
    return None if pause is None else iter(pause)


class _Endpoint:
    def __init__(self, dut, name, clock, shape, *, reset=None, has_ready=True):
        self.name = name
        self.clock = clock
        self.reset = reset
        self.codec = shape if isinstance(shape, Codec) else Codec(shape)
        self.valid = _handle(dut, f"{name}__valid")
        self.ready = _handle(dut, f"{name}__ready") if has_ready else None
        self.payload = _handle(dut, f"{name}__payload") if self.codec.width else None
        if self.payload is not None and len(self.payload) != self.codec.width:
            raise ValueError(f"{name}__payload is {len(self.payload)} bits wide, but the layout "
                             f"{self.codec.shape!r} has {self.codec.width}: wrong layout for this port?")
        self.log = logging.getLogger(f"cocotb.tb.{name}")
        self._pause = None
        self._task = None

    @property
    def pause(self):
        """The pause generator (an iterator of booleans, or ``None`` for no pauses). Assign to change it at any time."""
        return self._pause

    @pause.setter
    def pause(self, generator):
        self._pause = _pause_iter(generator)

    def _paused(self):
        return self._pause is not None and bool(next(self._pause))

    def _in_reset(self):
        return self.reset is not None and bool(self.reset.value)

    def start(self):
        if self._task is None:
            self._task = cocotb.start_soon(self._run())
        return self

    def stop(self):
        """Stop the endpoint's coroutine (it restarts on :meth:`start`)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None


class StreamDriver(_Endpoint):
    """Drives an input stream of the DUT: ``<name>__valid`` and ``<name>__payload``; samples ``<name>__ready``.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel.
    name : str
        The stream port's name (``"act"`` for ``act__valid``/``act__ready``/``act__payload``).
    clock : cocotb handle
        The clock (``dut.clk``).
    shape : ShapeLike or Codec
        The payload shape (``payload_shape(component, name)``); values are packed with :class:`Codec`.
    pause : iterator of bool, optional
        Idle inserter: consulted in each cycle in which a new beat could start; ``True`` keeps ``valid`` low.
    reset : cocotb handle, optional
        While high, ``valid`` is held low and nothing is sent.
    idle_payload : ``"random"``, ``"zero"`` or ``"hold"``
        What the payload carries while ``valid`` is low. ``"random"`` (default) checks that the DUT ignores it.
    rng : random.Random, optional
        Source of the random idle payload.
    callback : callable, optional
        Called with each beat's value when the DUT accepts it (e.g. to timestamp acceptance).

    Attributes
    ----------
    sent : int
        Beats accepted by the DUT so far.
    """

    def __init__(self, dut, name, clock, shape, *, pause=None, reset=None, idle_payload="random", rng=None,
                 callback=None):
        super().__init__(dut, name, clock, shape, reset=reset)
        if idle_payload not in ("random", "zero", "hold"):
            raise ValueError(f"idle_payload must be 'random', 'zero' or 'hold', not {idle_payload!r}")
        self.pause = pause
        self.idle_payload = idle_payload
        self._rng = rng if rng is not None else random.Random(0)
        self.callback = callback
        self._queue = collections.deque()
        self._queued = 0
        self.sent = 0
        self._accepted = Event()
        self.valid.value = 0
        self.start()

    def send_nowait(self, value):
        """Queue one beat; returns its sequence number (0 for the first beat ever queued)."""
        bits = self.codec.pack(value)  # pack now: a bad value fails where it was queued
        self._queue.append((value, bits))
        self._queued += 1
        return self._queued - 1

    def send_many(self, values):
        """Queue several beats."""
        for value in values:
            self.send_nowait(value)

    async def send(self, value):
        """Queue one beat and return once the DUT has accepted it."""
        index = self.send_nowait(value)
        while self.sent <= index:
            self._accepted.clear()
            await self._accepted.wait()

    async def wait_idle(self):
        """Return once every queued beat has been accepted."""
        while self.sent < self._queued:
            self._accepted.clear()
            await self._accepted.wait()

    @property
    def pending(self):
        """Beats queued and not yet accepted."""
        return self._queued - self.sent

    async def _run(self):
        edge, settled = RisingEdge(self.clock), ReadOnly()
        current = None
        while True:
            await edge
            if self._in_reset():
                self.valid.value = 0  # a beat offered before the reset is offered again after it
                await settled
                continue
            if current is None and self._queue and not self._paused():
                current = self._queue.popleft()
            if current is not None:
                if self.payload is not None:
                    self.payload.value = current[1]
                self.valid.value = 1
            else:
                self.valid.value = 0
                if self.payload is not None and self.idle_payload != "hold":
                    garbage = self._rng.getrandbits(self.codec.width) if self.idle_payload == "random" else 0
                    self.payload.value = garbage
            await settled
            if current is not None and self.ready.value == 1:
                value, current = current[0], None
                self.sent += 1
                if self.callback is not None:
                    self.callback(value)
                self._accepted.set()


class StreamMonitor(_Endpoint):
    """Receives (or watches) an output stream of the DUT and decodes every transferred beat.

    Parameters
    ----------
    dut, name, clock, shape, reset :
        As for :class:`StreamDriver`.
    pause : iterator of bool, optional
        Backpressure inserter (only with ``drive_ready``): ``True`` drives ``ready`` low for the cycle.
    drive_ready : bool
        The monitor is the stream's consumer and drives ``<name>__ready`` (default). With ``False`` it only watches
        handshakes that someone else completes.
    always_ready : bool
        The stream has no ``ready`` (an ``always_ready`` stream): every beat with ``valid`` high is transferred,
        and there is no backpressure to insert.
    callback : callable, optional
        Called with each decoded beat, e.g. ``scoreboard.observe``.
    check_protocol : bool
        Fail the test if the DUT withdraws ``valid`` or changes the payload of an offered beat before the transfer.

    Attributes
    ----------
    received : int
        Beats transferred so far.
    queue : collections.deque
        Decoded beats not yet taken with :meth:`recv` (only filled when there is no ``callback``).
    """

    def __init__(self, dut, name, clock, shape, *, pause=None, reset=None, drive_ready=True, always_ready=False,
                 callback=None, check_protocol=True):
        super().__init__(dut, name, clock, shape, reset=reset, has_ready=not always_ready)
        if always_ready and pause is not None:
            raise ValueError(f"{name} is always ready: it takes no backpressure inserter")
        self.pause = pause
        self.drive_ready = drive_ready and not always_ready
        self.callback = callback
        self.check_protocol = check_protocol
        self.queue = collections.deque()
        self.received = 0
        self._event = Event()
        if self.drive_ready:
            self.ready.value = 0
        self.start()

    async def recv(self):
        """The next beat (waits for it). Only for monitors without a ``callback``."""
        while not self.queue:
            self._event.clear()
            await self._event.wait()
        return self.queue.popleft()

    async def wait_for(self, count):
        """Return once ``count`` beats in total have been received."""
        while self.received < count:
            self._event.clear()
            await self._event.wait()

    async def _run(self):
        edge, settled = RisingEdge(self.clock), ReadOnly()
        offered = None  # payload bits of a beat offered and not yet accepted
        while True:
            await edge
            if self.drive_ready:
                self.ready.value = 0 if (self._in_reset() or self._paused()) else 1
            await settled
            if self._in_reset():
                offered = None
                continue
            if self.valid.value != 1:
                if self.check_protocol and offered is not None:
                    raise StreamProtocolError(f"{self.name}: valid withdrawn before the offered beat was accepted")
                continue
            bits = self.payload.value.to_unsigned() if self.payload is not None else 0
            if self.check_protocol and offered is not None and bits != offered:
                raise StreamProtocolError(
                    f"{self.name}: payload changed while stalled: {self.codec.unpack(offered)!r} -> "
                    f"{self.codec.unpack(bits)!r}")
            if self.ready is None or self.ready.value == 1:
                offered = None
                beat = self.codec.unpack(bits)
                self.received += 1
                if self.callback is not None:
                    self.callback(beat)
                else:
                    self.queue.append(beat)
                self._event.set()
            else:
                offered = bits
