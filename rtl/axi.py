"""AMBA AXI4 and AXI4-Lite interface signatures, and AMBA-conventional port names for the generated Verilog.

The signatures are flat (one member per AXI signal, named as in the AMBA specification without the channel prefix
of the port: ``awaddr``, ``awvalid``, ``rdata`` ...) and described from the manager's side: a manager port is
``Out(AXI4Signature(...))``, a subordinate port ``In(...)``.

:func:`amba_ports` names a component's ports the way integrators' tools (Vivado IP packager, Quartus Platform
Designer, cocotbext-axi ``AxiBus.from_prefix``) expect them: ``m_axi_awaddr`` rather than Amaranth's default
``m_axi__awaddr``::

    verilog.convert(npu, name="haneul_npu", ports=amba_ports(npu))
"""

from amaranth.hdl import Const, Module, Value
from amaranth.hdl._ir import PortDirection
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Burst", "Resp", "AXI4Signature", "AXI4LiteSignature", "amba_ports", "Renamed", "pass_through"]


class Burst(enum.Enum, shape=2):
    """``AxBURST``."""
    FIXED = 0
    INCR  = 1
    WRAP  = 2


class Resp(enum.Enum, shape=2):
    """``xRESP``."""
    OKAY   = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


def _check_width(name, value, allowed=None, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TypeError(f"{name} must be an integer of at least {minimum}, not {value!r}")
    if allowed is not None and value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, not {value}")


class AXI4Signature(wiring.Signature):
    """AXI4 (full) interface, manager's view.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr`` / ``araddr`` (byte addresses).
    data_width : int
        Width of ``wdata`` / ``rdata``: 32, 64, 128, 256, 512 or 1024.
    id_width : int
        Width of the transaction IDs (``awid``, ``bid``, ``arid``, ``rid``); at least 1.

    Members
    -------
    aw* : address write channel (``awid``, ``awaddr``, ``awlen``, ``awsize``, ``awburst``, ``awlock``, ``awcache``,
        ``awprot``, ``awvalid`` out; ``awready`` in)
    w* : write data channel (``wdata``, ``wstrb``, ``wlast``, ``wvalid`` out; ``wready`` in)
    b* : write response channel (``bid``, ``bresp``, ``bvalid`` in; ``bready`` out)
    ar* : address read channel (as ``aw*``)
    r* : read data channel (``rid``, ``rdata``, ``rresp``, ``rlast``, ``rvalid`` in; ``rready`` out)
    """

    DATA_WIDTHS = (32, 64, 128, 256, 512, 1024)

    def __init__(self, *, addr_width=32, data_width=128, id_width=1):
        _check_width("Address width", addr_width, minimum=12)
        _check_width("Data width", data_width, self.DATA_WIDTHS)
        _check_width("ID width", id_width)
        self.addr_width = addr_width
        self.data_width = data_width
        self.id_width = id_width
        members = {}
        for ch in ("aw", "ar"):
            members.update({
                f"{ch}id":    Out(id_width),
                f"{ch}addr":  Out(addr_width),
                f"{ch}len":   Out(8),
                f"{ch}size":  Out(3),
                f"{ch}burst": Out(Burst),
                f"{ch}lock":  Out(1),
                f"{ch}cache": Out(4),
                f"{ch}prot":  Out(3),
                f"{ch}valid": Out(1),
                f"{ch}ready": In(1),
            })
        members.update({
            "wdata":  Out(data_width),
            "wstrb":  Out(data_width // 8),
            "wlast":  Out(1),
            "wvalid": Out(1),
            "wready": In(1),
            "bid":    In(id_width),
            "bresp":  In(Resp),
            "bvalid": In(1),
            "bready": Out(1),
            "rid":    In(id_width),
            "rdata":  In(data_width),
            "rresp":  In(Resp),
            "rlast":  In(1),
            "rvalid": In(1),
            "rready": Out(1),
        })
        super().__init__(members)

    @property
    def data_bytes(self):
        return self.data_width // 8

    def __eq__(self, other):
        return (type(other) is type(self) and other.addr_width == self.addr_width
                and other.data_width == self.data_width and other.id_width == self.id_width)

    def __repr__(self):
        return (f"AXI4Signature(addr_width={self.addr_width}, data_width={self.data_width}, "
                f"id_width={self.id_width})")


class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite interface, manager's view.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr`` / ``araddr`` (byte addresses).
    data_width : int
        32 or 64.

    Members
    -------
    awaddr, awprot, awvalid, awready, wdata, wstrb, wvalid, wready, bresp, bvalid, bready,
    araddr, arprot, arvalid, arready, rdata, rresp, rvalid, rready
        As in the AMBA AXI4-Lite specification.
    """

    def __init__(self, *, addr_width=12, data_width=32):
        _check_width("Address width", addr_width, minimum=2)
        _check_width("Data width", data_width, (32, 64))
        self.addr_width = addr_width
        self.data_width = data_width
        super().__init__({
            "awaddr":  Out(addr_width),
            "awprot":  Out(3),
            "awvalid": Out(1),
            "awready": In(1),
            "wdata":   Out(data_width),
            "wstrb":   Out(data_width // 8),
            "wvalid":  Out(1),
            "wready":  In(1),
            "bresp":   In(Resp),
            "bvalid":  In(1),
            "bready":  Out(1),
            "araddr":  Out(addr_width),
            "arprot":  Out(3),
            "arvalid": Out(1),
            "arready": In(1),
            "rdata":   In(data_width),
            "rresp":   In(Resp),
            "rvalid":  In(1),
            "rready":  Out(1),
        })

    def __eq__(self, other):
        return (type(other) is type(self) and other.addr_width == self.addr_width
                and other.data_width == self.data_width)

    def __repr__(self):
        return f"AXI4LiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


def amba_ports(component):
    """The ports of ``component`` for :func:`amaranth.back.verilog.convert`, named ``<port>_<member>``.

    Ports whose signature is nested (an AXI interface) get their members joined with one underscore
    (``m_axi_awaddr``), plain ports keep their name (``irq``). Stream ports that are not AXI keep Amaranth's
    ``<port>__<member>``, so the names stay unique. Members that are constants (the ``ready`` of an
    ``always_ready`` stream) are not ports.
    """
    ports = {}
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, Const):
            continue
        top = component.signature.members[path[0]]
        sep = "_" if top.is_signature and isinstance(top.signature, (AXI4Signature, AXI4LiteSignature)) else "__"
        name = sep.join(str(p) for p in path)
        if name in ports:
            raise NameError(f"Port name {name!r} is used twice")
        ports[name] = (Value.cast(value), PortDirection.Input if member.flow == In else PortDirection.Output)
    return ports


class Renamed(wiring.Component):
    """``component`` with some of its ports renamed, every port passed straight through.

    A block whose AXI port is called ``bus`` becomes, as ``Renamed(dma, {"bus": "m_axi"})``, a top whose Verilog
    (with :func:`amba_ports`) has ``m_axi_awaddr`` ... — how the block-level testbenches present a block as an
    integrator would see it.

    Parameters
    ----------
    component : wiring.Component
    names : dict of str to str
        ``{port name in component: port name of the wrapper}``.
    name : str
        Name of the wrapped component as a submodule (default ``"inner"``).
    """

    def __init__(self, component, names, *, name="inner"):
        unknown = set(names) - set(component.signature.members)
        if unknown:
            raise NameError(f"{component!r} has no port {', '.join(sorted(unknown))}")
        self.inner = component
        self.names = dict(names)
        self._name = name
        super().__init__({self.names.get(port, port): member
                          for port, member in component.signature.members.items()})

    def elaborate(self, platform):
        m = Module()
        m.submodules[self._name] = inner = self.inner
        pass_through(m, inner, self, self.names)
        return m


def pass_through(m, inner, outer, names=None, *, skip=()):
    """Connect every port of the component ``inner`` to the same-shaped port of the wrapper ``outer`` (named
    ``names.get(port, port)``), except the ports in ``skip``: interfaces with :func:`wiring.connect`, plain ports by
    direction. For wrappers that present a block under other names (:class:`Renamed`) or change a few of its ports
    (a testbench's fault injection)."""
    names = names or {}
    for port, member in inner.signature.members.items():
        if port in skip:
            continue
        theirs, ours = getattr(inner, port), getattr(outer, names.get(port, port))
        if member.is_signature:
            wiring.connect(m, wiring.flipped(ours), theirs)
        elif member.flow == In:
            m.d.comb += theirs.eq(ours)
        else:
            m.d.comb += ours.eq(theirs)
