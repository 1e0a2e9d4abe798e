"""An AXI4-Lite manager for Amaranth simulator testbenches (``amaranth.sim`` async testbenches).

::

    resp = await axi_write(ctx, dut.bus, 0x020, 1)           # Resp.OKAY
    data, resp = await axi_read(ctx, dut.bus, 0x024)

``axi_write`` can send AW and W together or in either order with a gap, and hold off ``bready``; ``axi_read`` can
hold off ``rready``; both check that a stalled response stays put.
"""

from haneul.rtl.axi import Resp

__all__ = ["axi_write", "axi_read"]


async def axi_write(ctx, bus, addr, value, *, strb=0xF, order="together", gap=0, b_stall=0):
    """Write ``value`` at ``addr``; ``order`` is ``"together"``, ``"aw_first"`` or ``"w_first"`` (the other channel
    follows ``gap`` cycles after the first handshake). With ``b_stall``, ``bready`` stays low for that many cycles
    after ``bvalid`` rises, and the response must stay put. Returns the response."""
    async def send(valid, ready, values):
        for signal, v in values:
            ctx.set(signal, v)
        ctx.set(valid, 1)
        await ctx.tick().until(ready)
        ctx.set(valid, 0)

    aw = (bus.awvalid, bus.awready, [(bus.awaddr, addr)])
    w = (bus.wvalid, bus.wready, [(bus.wdata, value), (bus.wstrb, strb)])
    if order == "together":
        ctx.set(bus.awaddr, addr)
        ctx.set(bus.wdata, value)
        ctx.set(bus.wstrb, strb)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        aw_done = w_done = False
        while not (aw_done and w_done):
            _, _, awready, wready = await ctx.tick().sample(bus.awready, bus.wready)
            if awready and not aw_done:
                aw_done = True
                ctx.set(bus.awvalid, 0)
            if wready and not w_done:
                w_done = True
                ctx.set(bus.wvalid, 0)
    else:
        first, second = (aw, w) if order == "aw_first" else (w, aw)
        await send(*first)
        if gap:
            await ctx.tick().repeat(gap)
        await send(*second)
    if b_stall:
        await ctx.tick().until(bus.bvalid)
        resp = ctx.get(bus.bresp)
        for _ in range(b_stall):
            _, _, bvalid, bresp = await ctx.tick().sample(bus.bvalid, bus.bresp)
            assert bvalid and bresp == resp, "B changed while stalled"
    ctx.set(bus.bready, 1)
    resp, = await ctx.tick().sample(bus.bresp).until(bus.bvalid)
    ctx.set(bus.bready, 0)
    return Resp(resp)


async def axi_read(ctx, bus, addr, *, r_stall=0):
    """Read ``addr``; with ``r_stall``, ``rready`` stays low that many cycles after ``rvalid`` rises and the data
    must stay put. Returns ``(data, resp)``."""
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arvalid, 1)
    await ctx.tick().until(bus.arready)
    ctx.set(bus.arvalid, 0)
    if r_stall:
        await ctx.tick().until(bus.rvalid)
        held = ctx.get(bus.rdata), ctx.get(bus.rresp)
        for _ in range(r_stall):
            _, _, rvalid, *now = await ctx.tick().sample(bus.rvalid, bus.rdata, bus.rresp)
            assert rvalid and tuple(now) == held, "R changed while stalled"
    ctx.set(bus.rready, 1)
    data, resp = await ctx.tick().sample(bus.rdata, bus.rresp).until(bus.rvalid)
    ctx.set(bus.rready, 0)
    return data, Resp(resp)
