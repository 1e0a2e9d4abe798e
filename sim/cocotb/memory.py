"""External memory for cocotb testbenches: a cocotbext-axi ``AxiRam`` that can answer with bus errors."""

from cocotbext.axi import AxiRam
from cocotbext.axi.constants import AxiResp

__all__ = ["FaultyRam"]


class FaultyRam(AxiRam):
    """An ``AxiRam`` whose beats touching ``[start, end)`` of one of ``errors`` (``(start, end, resp)``) fail with
    ``resp`` (``AxiResp.SLVERR`` or ``AxiResp.DECERR``): a read beat gets it as ``rresp`` (and zero data), a write
    burst as ``bresp`` (the failing bytes are not written)."""

    def __init__(self, *args, errors=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.errors = list(errors)
        self._kind = {"r": AxiResp.SLVERR, "b": AxiResp.SLVERR}
        read, write = self.read_if._read, self.write_if._write

        def fault(address, length):
            for start, end, resp in self.errors:
                if address < end and start < address + length:
                    return resp
            return None

        async def faulty_read(address, length):
            resp = fault(address, length)
            if resp is not None:
                self._kind["r"] = resp
                raise IOError(f"injected {resp.name} at {address:#x}")
            return await read(address, length)

        async def faulty_write(address, data):
            resp = fault(address, len(data))
            if resp is not None:
                self._kind["b"] = resp
                raise IOError(f"injected {resp.name} at {address:#x}")
            await write(address, data)

        self.read_if._read = faulty_read
        self.write_if._write = faulty_write
        for name, channel, field in (("r", self.read_if.r_channel, "rresp"), ("b", self.write_if.b_channel, "bresp")):
            send = channel.send

            async def mapped_send(item, name=name, send=send, field=field):
                if getattr(item, field) == AxiResp.SLVERR:   # the model's answer to a failed access
                    setattr(item, field, self._kind[name])
                await send(item)
            channel.send = mapped_send
