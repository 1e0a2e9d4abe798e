"""Packing of Amaranth payloads into the flat bit vectors of generated Verilog.

``amaranth.back.verilog`` flattens every port to one vector: a stream port ``act`` whose payload is a
``data.StructLayout`` becomes ``act__payload[W-1:0]``, with each field at the bit offset the layout gives it. A
:class:`Codec` turns Python values into that integer and back, driven by the layout itself, so a testbench never
hard-codes an offset::

    codec = Codec(ActivationBeat(config))          # StructLayout({"data": ArrayLayout(signed(8), 4), "last": 1})
    bits = codec.pack({"data": [1, -2, 3, -128], "last": 1})
    codec.unpack(bits)                             # {"data": [1, -2, 3, -128], "last": 1}

Value representation
--------------------
* plain shapes (``unsigned(n)``, ``signed(n)``): ``int`` (signed shapes unpack to negative numbers);
* ``amaranth.lib.enum`` shapes: an enum member or its ``int`` value (unpacks to the member, or to an ``int`` when the
  bits name no member);
* ``data.ArrayLayout``: a sequence of ``length`` element values (lists, tuples, numpy arrays);
* ``data.StructLayout`` and other layouts: a ``dict`` from field name to value. Packing requires every field;
  ``data.UnionLayout`` requires exactly one (the other members overlap it). Unions unpack to all members.

Out-of-range values raise :exc:`ValueError` rather than wrapping silently, which catches testbench bugs early.
"""

import enum as py_enum

from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["Codec", "payload_shape"]


def payload_shape(component, port):
    """The payload shape of stream ``port`` of an Amaranth ``wiring.Component`` (without elaborating it).

    ``payload_shape(SystolicArray(cfg), "act")`` is ``ActivationBeat(cfg)``.
    """
    try:
        member = component.signature.members[port]
    except KeyError:
        raise KeyError(f"{type(component).__name__} has no port {port!r}") from None
    if not member.is_signature or "payload" not in member.signature.members:
        raise TypeError(f"Port {port!r} of {type(component).__name__} is not a stream")
    return member.signature.members["payload"].shape


class Codec:
    """Packs values of an Amaranth shape-castable into integers and unpacks them again.

    Parameters
    ----------
    shape : ShapeLike
        An Amaranth shape: ``unsigned(n)``, ``signed(n)``, an ``amaranth.lib.enum`` class or a ``data.Layout``.

    Attributes
    ----------
    shape : ShapeLike
        The shape given.
    width : int
        Width in bits of the packed value.
    """

    def __init__(self, shape):
        self.shape = shape
        self.width = Shape.cast(shape).width
        self._pack, self._unpack = _compile(shape)

    def pack(self, value):
        """The value as an unsigned integer of :attr:`width` bits."""
        return self._pack(value)

    def unpack(self, bits):
        """The value held in the unsigned integer ``bits`` (a ``LogicArray`` is accepted too)."""
        if not isinstance(bits, int):
            bits = bits.to_unsigned()
        return self._unpack(bits)

    def __repr__(self):
        return f"Codec({self.shape!r})"


# Each shape compiles to a pair of closures, so per-beat packing does no layout inspection.

def _compile(shape):
    if isinstance(shape, type) and issubclass(shape, data.View):
        # A ``data.Struct``/``data.Union`` class (e.g. ``ppu.Config``): pack it by its layout.
        shape = data.Layout.cast(shape)
    if isinstance(shape, data.ArrayLayout):
        return _compile_array(shape)
    if isinstance(shape, data.Layout):
        return _compile_fields(shape)
    if isinstance(shape, type) and issubclass(shape, py_enum.Enum):
        return _compile_enum(shape)
    return _compile_plain(Shape.cast(shape))


def _compile_plain(shape):
    width, mask = shape.width, (1 << shape.width) - 1
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if shape.signed else (0, mask)
    sign = 1 << (width - 1) if shape.signed and width else 0

    def pack(value):
        value = int(value)  # numpy integers and bools too
        if not lo <= value <= hi:
            raise ValueError(f"Value {value} does not fit {shape!r} (range {lo}..{hi})")
        return value & mask

    if sign:
        def unpack(bits):
            return (bits ^ sign) - sign
    else:
        def unpack(bits):
            return bits
    return pack, unpack


def _compile_enum(enum_cls):
    pack_int, unpack_int = _compile_plain(Shape.cast(enum_cls))

    def pack(value):
        return pack_int(value.value if isinstance(value, enum_cls) else value)

    def unpack(bits):
        value = unpack_int(bits)
        try:
            return enum_cls(value)
        except ValueError:
            return value
    return pack, unpack


def _compile_array(layout):
    length = layout.length
    elem_width = Shape.cast(layout.elem_shape).width
    elem_mask = (1 << elem_width) - 1
    pack_elem, unpack_elem = _compile(layout.elem_shape)
    offsets = [field.offset for _, field in layout]

    def pack(value):
        if len(value) != length:
            raise ValueError(f"Expected {length} elements for {layout!r}, got {len(value)}")
        bits = 0
        for offset, element in zip(offsets, value):
            bits |= pack_elem(element) << offset
        return bits

    def unpack(bits):
        return [unpack_elem((bits >> offset) & elem_mask) for offset in offsets]
    return pack, unpack


def _compile_fields(layout):
    union = isinstance(layout, data.UnionLayout)
    fields = []
    for name, field in layout:
        pack_field, unpack_field = _compile(field.shape)
        fields.append((name, field.offset, (1 << field.width) - 1, pack_field, unpack_field))
    names = {name for name, *_ in fields}

    def pack(value):
        if not isinstance(value, dict):
            raise TypeError(f"Expected a dict of fields for {layout!r}, got {value!r}")
        extra = set(value) - names
        if extra:
            raise KeyError(f"{layout!r} has no field(s) {sorted(extra)!r}")
        if union and len(value) != 1:
            raise ValueError(f"A union value must give exactly one member, not {sorted(value)!r}")
        if not union and len(value) != len(names):
            raise KeyError(f"Missing field(s) {sorted(names - set(value))!r} of {layout!r}")
        bits = 0
        for name, offset, _, pack_field, _ in fields:
            if name in value:
                bits |= pack_field(value[name]) << offset
        return bits

    def unpack(bits):
        return {name: unpack_field((bits >> offset) & mask) for name, offset, mask, _, unpack_field in fields}
    return pack, unpack
