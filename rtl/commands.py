"""The datapath command set of Haneul, defined once.

The datapath (:class:`haneul.rtl.datapath.Datapath`) executes a stream of fixed-width *command words*. This module
is the single definition of that format, used by three parties:

* the hardware: the sequencer matches :class:`Opcode` and reads the argument fields through the
  :class:`CommandWord` layout;
* the compiler and the tests: :func:`encode` turns a command (one dataclass per command: :class:`Nop`,
  :class:`Matmul`, :class:`Requant`, :class:`Fence`, :class:`Add`, :class:`Pool`, :class:`Dwconv`) into the integer
  the hardware
  reads, and :func:`decode` turns it back. Both use the same layouts as the hardware, so the two cannot disagree
  about a bit;
* the documentation: :func:`command_table` renders the command set (``docs/datapath.md`` holds its output for the
  default configuration, and a test checks that it is current).

A command word is a :class:`CommandWord`: the opcode in the low :data:`OPCODE_WIDTH` bits, then the arguments, a
:class:`Arguments` union of one :class:`~amaranth.lib.data.StructLayout` per command (:class:`MatmulArgs`,
:class:`RequantArgs`, :class:`AddArgs`, :class:`PoolArgs`, :class:`DwconvArgs`). Address fields are as wide as the memory they address
(``DatapathConfig.spad_addr_width``, ``DatapathConfig.acc_addr_width``); the word is padded to a multiple of
:data:`WORD_ALIGN` bits, so its width depends on the configuration: 64 bits for every configuration up to
16384-line memories (the default is 2048 scratchpad lines and 512 accumulator lines). The all-zero word is a
``NOP``.

Besides the field widths, a command must be *legal* (see :meth:`CommandFormat.check`): counts are at least 1, and
every line range it touches lies inside its memory (no wrap-around). The encoder raises :class:`CommandError` for
an illegal command; the hardware flags it with an :class:`ErrorCode` and stops (see ``docs/datapath.md``).
"""

import dataclasses
import re
from typing import ClassVar

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data, enum

from haneul.errors import HaneulError

from .config import DatapathConfig
from .pool import Mode as PoolMode

__all__ = [
    "OPCODE_WIDTH", "COUNT_WIDTH", "WORD_ALIGN", "POOL_MAX_WINDOW", "DWCONV_KERNEL", "DWCONV_SIZE_WIDTH",
    "Opcode", "ErrorCode", "MatmulArgs", "RequantArgs", "AddArgs", "PoolArgs", "DwconvArgs", "Arguments",
    "CommandWord", "CommandError", "Nop", "Matmul", "Requant", "Fence", "Add", "Pool", "Dwconv", "PoolMode",
    "COMMANDS", "weight_lines_per_row", "weight_tile_lines", "word_width", "dwconv_output_size",
    "CommandFormat", "encode", "decode", "command_table",
]

#: Width of the opcode field, at the bottom of every command word.
OPCODE_WIDTH = 4
#: Width of the ``count`` fields (lines per command).
COUNT_WIDTH = 16
#: Command words are padded to a multiple of this many bits (the width of a bus word of the command fetcher).
WORD_ALIGN = 32
#: Largest pooling window (lines per window) of ``POOL``.
POOL_MAX_WINDOW = 256
#: Kernel height and width of ``DWCONV`` (the depthwise unit's window buffer): 3 x 3, ``DWCONV_KERNEL ** 2`` weight
#: lines.
DWCONV_KERNEL = 3
#: Width of the ``height`` and ``width`` fields of ``DWCONV`` (pixels of the input tile).
DWCONV_SIZE_WIDTH = 8


class Opcode(enum.Enum, shape=OPCODE_WIDTH):
    """Operation of a command word. Encodings not listed are illegal (:attr:`ErrorCode.ILLEGAL_OPCODE`).

    Members
    -------
    NOP
        Do nothing. The all-zero word is a ``NOP``.
    MATMUL
        Multiply ``count`` activation lines by one weight tile and write or add the results to the accumulator
        (:class:`MatmulArgs`).
    REQUANT
        Stream ``count`` accumulator lines through the requantiser to the output stream (:class:`RequantArgs`).
    FENCE
        Wait until every earlier command has completed: all results written to the accumulator, all output lines
        accepted on ``out``.
    ADD
        Add ``count`` pairs of scratchpad lines element-wise with TFLite's int8 ADD arithmetic and send the sums to
        the output stream (:class:`AddArgs`).
    POOL
        Max- or average-pool ``count`` scratchpad lines in windows of ``window`` lines and send one line per window
        to the output stream (:class:`PoolArgs`).
    DWCONV
        Depthwise 3 x 3 convolution of one channel group (one scratchpad line per pixel) on the depthwise unit,
        through the requantiser to the output stream, one line per output pixel (:class:`DwconvArgs`).
    """
    NOP     = 0
    MATMUL  = 1
    REQUANT = 2
    FENCE   = 3
    ADD     = 4
    POOL    = 5
    DWCONV  = 6


class ErrorCode(enum.Enum, shape=4):
    """Why the sequencer stopped (the ``error_code`` output of the datapath).

    Members
    -------
    NONE
        No error.
    ILLEGAL_OPCODE
        The opcode is not one of :class:`Opcode`.
    BAD_COUNT
        A ``count`` field is zero, a ``POOL`` window is not in ``1 .. POOL_MAX_WINDOW``, or a ``DWCONV`` input tile
        is empty or, with its padding, smaller than the kernel.
    BAD_RANGE
        A line range runs past the end of its memory (for example ``act_addr + count > spad_depth``).
    UNSUPPORTED
        The datapath was built without the unit the command needs (``ADD``, ``POOL``, ``DWCONV``).
    """
    NONE           = 0
    ILLEGAL_OPCODE = 1
    BAD_COUNT      = 2
    BAD_RANGE      = 3
    UNSUPPORTED    = 4


def weight_lines_per_row(config):
    """Scratchpad lines holding one weight row of ``cols`` elements: ``ceil(cols / rows)``.

    A scratchpad line has ``rows`` elements; a weight row of the array has ``cols``. When ``cols > rows`` a weight
    row is stored in consecutive lines (element ``n`` in line ``n // rows``, position ``n % rows``), and the
    datapath packs them into one row of the weight stream; the unused tail of the last line is ignored.
    """
    return -(-config.cols // config.rows)


def weight_tile_lines(config):
    """Scratchpad lines of one weight tile: ``rows * weight_lines_per_row(config)``, row 0 first."""
    return config.rows * weight_lines_per_row(config)


class MatmulArgs(data.StructLayout):
    """Arguments of ``MATMUL``: one weight tile times ``count`` activation lines into the accumulator.

    Result line ``m`` is ``sum_k act[act_addr + m][k] * W[k]``, where ``W`` is the ``rows x cols`` weight tile
    stored at ``weight_addr``; it is written to accumulator line ``acc_addr + m`` (``accumulate = 0``) or added to
    it (``accumulate = 1``).

    Parameters
    ----------
    config : DatapathConfig
        Address widths.

    Members
    -------
    act_addr : unsigned(spad_addr_width)
        Scratchpad line of the first activation vector; the vectors are lines ``act_addr .. act_addr + count - 1``.
    weight_addr : unsigned(spad_addr_width)
        Scratchpad line of the weight tile: :func:`weight_tile_lines` lines, weight row 0 first (each row
        :func:`weight_lines_per_row` lines).
    acc_addr : unsigned(acc_addr_width)
        Accumulator line of the first result; results go to lines ``acc_addr .. acc_addr + count - 1``.
    count : unsigned(COUNT_WIDTH)
        Number of activation vectors (M of this tile), at least 1.
    accumulate : unsigned(1)
        0: the results overwrite the accumulator lines (first K tile); 1: they are added (later K tiles).
    """

    def __init__(self, config):
        super().__init__({
            "act_addr":    unsigned(config.spad_addr_width),
            "weight_addr": unsigned(config.spad_addr_width),
            "acc_addr":    unsigned(config.acc_addr_width),
            "count":       unsigned(COUNT_WIDTH),
            "accumulate":  unsigned(1),
        })


class RequantArgs(data.StructLayout):
    """Arguments of ``REQUANT``: accumulator lines through the requantiser to the ``out`` stream.

    Every line ``acc_addr .. acc_addr + count - 1`` becomes one int8 line on ``out``, in address order, computed
    with the requantiser's current parameters (bias, per-channel multiplier and shift, output zero point, clamp
    bounds, rounding mode). The read-out starts after every earlier ``MATMUL`` has written its results.

    Parameters
    ----------
    config : DatapathConfig
        Address widths.

    Members
    -------
    acc_addr : unsigned(acc_addr_width)
        First accumulator line.
    count : unsigned(COUNT_WIDTH)
        Number of lines, at least 1.
    load_params : unsigned(1)
        1: first take the next beat of the ``ppu_param`` stream and load it into the requantiser (it then applies
        to this and every later ``REQUANT``); 0: keep the current parameters.
    """

    def __init__(self, config):
        super().__init__({
            "acc_addr":    unsigned(config.acc_addr_width),
            "count":       unsigned(COUNT_WIDTH),
            "load_params": unsigned(1),
        })


class AddArgs(data.StructLayout):
    """Arguments of ``ADD``: element-wise int8 addition of two runs of scratchpad lines, to the ``out`` stream.

    Output line ``i`` is ``add(line[a_addr + i], line[b_addr + i])`` computed per element with the parameters of
    the adder (input offsets, multipliers and shifts, output multiplier, shift and zero point, clamp bounds:
    :class:`haneul.rtl.eltwise.Params`), exactly as :func:`haneul.sim.golden.kernels.add`. A scratchpad line has
    ``rows`` elements; on ``out`` (``cols`` lanes) they are lanes ``0 .. rows - 1`` and the other lanes are zero.

    Parameters
    ----------
    config : DatapathConfig
        Address widths.

    Members
    -------
    a_addr : unsigned(spad_addr_width)
        Scratchpad line of the first element of the first operand.
    b_addr : unsigned(spad_addr_width)
        Scratchpad line of the first element of the second operand.
    count : unsigned(COUNT_WIDTH)
        Number of line pairs (and output lines), at least 1.
    load_params : unsigned(1)
        1: first take the next beat of the ``add_param`` stream and load it into the adder; 0: keep its parameters.
    """

    def __init__(self, config):
        super().__init__({
            "a_addr":      unsigned(config.spad_addr_width),
            "b_addr":      unsigned(config.spad_addr_width),
            "count":       unsigned(COUNT_WIDTH),
            "load_params": unsigned(1),
        })


class PoolArgs(data.StructLayout):
    """Arguments of ``POOL``: max or average pooling of consecutive scratchpad lines, to the ``out`` stream.

    Lines ``addr .. addr + count - 1`` are split into consecutive windows of ``window`` lines (the last window is
    shorter when ``window`` does not divide ``count``); each window becomes one output line, per element the maximum
    or the rounded average of its lines (``kernels.max_pool_2d`` / ``kernels.average_pool_2d`` for one window),
    clamped to ``[act_min, act_max]``. The lines of a window are the input positions it covers, laid out one after
    the other by whoever loads the scratchpad. Lanes ``rows .. cols - 1`` of the output lines are zero.

    Parameters
    ----------
    config : DatapathConfig
        Address widths.

    Members
    -------
    addr : unsigned(spad_addr_width)
        Scratchpad line of the first line of the first window.
    count : unsigned(COUNT_WIDTH)
        Number of input lines, at least 1.
    window : unsigned(9)
        Lines per window, ``1 .. POOL_MAX_WINDOW``.
    mode : PoolMode
        ``MAX`` or ``AVERAGE``.
    act_min : signed(8)
        Lower clamp bound of the fused activation.
    act_max : signed(8)
        Upper clamp bound of the fused activation.
    """

    def __init__(self, config):
        super().__init__({
            "addr":    unsigned(config.spad_addr_width),
            "count":   unsigned(COUNT_WIDTH),
            "window":  unsigned(POOL_MAX_WINDOW.bit_length()),
            "mode":    PoolMode,
            "act_min": signed(8),
            "act_max": signed(8),
        })


class DwconvArgs(data.StructLayout):
    """Arguments of ``DWCONV``: a depthwise 3 x 3 convolution of one channel group, to the ``out`` stream.

    The input tile is ``height x width`` pixels of one group of ``rows`` channels, one scratchpad line per pixel, in
    raster order: pixel ``(y, x)`` is line ``act_addr + y * width + x`` (lanes past the layer's channels are don't
    care). The 9 weight lines follow each other from ``weight_addr``, tap ``i * 3 + j`` (kernel row ``i``, column
    ``j``) in line ``weight_addr + i * 3 + j``, one weight per lane (zero in lanes past the layer's channels). The
    tile is padded by ``pad_*`` pixels of the input zero point on each side (masked in the depthwise unit, not read;
    a tile the DMA has already padded has no ``pad_*``), and every 3 x 3 window of the padded tile at the stride is
    an output pixel: ``out_h = (height + pad_top + pad_bottom - 3) // stride + 1`` rows of ``out_w = (width +
    pad_left + pad_right - 3) // stride + 1`` pixels (:func:`dwconv_output_size`). Output pixel ``(oy, ox)`` is::

        acc[l] = sum over i, j < 3 of weight[i * 3 + j][l] * (in[oy * stride - pad_top + i][ox * stride - pad_left
                 + j][l] - zero_point)     (a tap in the padding adds 0)

    requantised by the requantiser (bias, per-channel multiplier and shift, output zero point, clamp) like a
    ``REQUANT`` line: one ``out`` line per output pixel in raster order, the ``rows`` channels in lanes ``0 ..
    rows - 1`` (the other lanes are requantised zeros).

    Parameters
    ----------
    config : DatapathConfig
        Address widths.

    Members
    -------
    act_addr : unsigned(spad_addr_width)
        Scratchpad line of pixel (0, 0) of the input tile; the tile is lines ``act_addr .. act_addr + height *
        width - 1``, row by row.
    weight_addr : unsigned(spad_addr_width)
        Scratchpad line of the first of the 9 weight lines (tap order: kernel row by row).
    height : unsigned(DWCONV_SIZE_WIDTH)
        Rows of the input tile, at least 1; with the padding at least 3.
    width : unsigned(DWCONV_SIZE_WIDTH)
        Pixels per row of the input tile, at least 1; with the padding at least 3.
    stride2 : unsigned(1)
        0: stride 1; 1: stride 2 (both directions).
    pad_top : unsigned(1)
        Rows of zero-point padding above the tile (0 or 1).
    pad_bottom : unsigned(1)
        Rows of zero-point padding below the tile (0 or 1).
    pad_left : unsigned(1)
        Columns of zero-point padding left of the tile (0 or 1).
    pad_right : unsigned(1)
        Columns of zero-point padding right of the tile (0 or 1).
    zero_point : signed(8)
        Zero point of the input (TFLite's ``-input_offset``), subtracted from every input element.
    load_params : unsigned(1)
        1: first take the next beat of the ``ppu_param`` stream and load it into the requantiser (as ``REQUANT``
        does; it then applies to later ``REQUANT`` s and ``DWCONV`` s too); 0: keep the current parameters.
    """

    def __init__(self, config):
        super().__init__({
            "act_addr":    unsigned(config.spad_addr_width),
            "weight_addr": unsigned(config.spad_addr_width),
            "height":      unsigned(DWCONV_SIZE_WIDTH),
            "width":       unsigned(DWCONV_SIZE_WIDTH),
            "stride2":     unsigned(1),
            "pad_top":     unsigned(1),
            "pad_bottom":  unsigned(1),
            "pad_left":    unsigned(1),
            "pad_right":   unsigned(1),
            "zero_point":  signed(8),
            "load_params": unsigned(1),
        })


def dwconv_output_size(height, width, stride=1, padding=((0, 0), (0, 0))):
    """Output rows and columns of a ``DWCONV`` over a ``height x width`` tile: ``(padded - 3) // stride + 1`` per
    axis (``padding`` is ``((top, bottom), (left, right))``)."""
    (pt, pb), (pl, pr) = padding
    return ((height + pt + pb - DWCONV_KERNEL) // stride + 1, (width + pl + pr - DWCONV_KERNEL) // stride + 1)


_ARGS = (MatmulArgs, RequantArgs, AddArgs, PoolArgs, DwconvArgs)


def _args_width(config):
    return max(layout(config).size for layout in _ARGS)


def word_width(config):
    """Width in bits of a command word: the opcode and the widest arguments, padded to :data:`WORD_ALIGN`."""
    used = OPCODE_WIDTH + _args_width(config)
    return -(-used // WORD_ALIGN) * WORD_ALIGN


class Arguments(data.UnionLayout):
    """The arguments of a command word: one member per command with arguments, all at bit 0.

    Parameters
    ----------
    config : DatapathConfig
        Address widths.

    Members
    -------
    matmul : MatmulArgs
        Arguments of ``MATMUL``.
    requant : RequantArgs
        Arguments of ``REQUANT``.
    add : AddArgs
        Arguments of ``ADD``.
    pool : PoolArgs
        Arguments of ``POOL``.
    dwconv : DwconvArgs
        Arguments of ``DWCONV``.
    raw : unsigned(word_width - OPCODE_WIDTH)
        All argument bits, including the padding (zero in words made by :func:`encode`).
    """

    def __init__(self, config):
        super().__init__({
            "matmul":  MatmulArgs(config),
            "requant": RequantArgs(config),
            "add":     AddArgs(config),
            "pool":    PoolArgs(config),
            "dwconv":  DwconvArgs(config),
            "raw":     unsigned(word_width(config) - OPCODE_WIDTH),
        })


class CommandWord(data.StructLayout):
    """A command word: the payload of the datapath's ``cmd`` stream.

    Parameters
    ----------
    config : DatapathConfig
        Address widths.

    Members
    -------
    opcode : Opcode
        The operation, bits ``0 .. OPCODE_WIDTH - 1``.
    args : Arguments
        Its arguments, interpreted according to ``opcode``.
    """

    def __init__(self, config):
        super().__init__({
            "opcode": Opcode,
            "args":   Arguments(config),
        })


class CommandError(HaneulError, ValueError):
    """A command that cannot be encoded (a field out of range, an illegal combination) or a word that cannot be
    decoded."""


# Commands as Python values -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Nop:
    """``NOP``: no operation."""
    opcode: ClassVar[Opcode] = Opcode.NOP
    member: ClassVar[str | None] = None


@dataclasses.dataclass(frozen=True)
class Matmul:
    """``MATMUL``: ``count`` activation lines times one weight tile, into the accumulator (see :class:`MatmulArgs`).

    Parameters
    ----------
    act_addr : int
        Scratchpad line of the first activation vector.
    weight_addr : int
        Scratchpad line of the weight tile (:func:`weight_tile_lines` lines).
    acc_addr : int
        Accumulator line of the first result.
    count : int
        Number of activation vectors, ``1 .. 2**COUNT_WIDTH - 1``.
    accumulate : bool
        Add to the accumulator lines instead of overwriting them.
    """
    act_addr: int
    weight_addr: int
    acc_addr: int
    count: int
    accumulate: bool = False

    opcode: ClassVar[Opcode] = Opcode.MATMUL
    member: ClassVar[str | None] = "matmul"


@dataclasses.dataclass(frozen=True)
class Requant:
    """``REQUANT``: ``count`` accumulator lines through the requantiser to ``out`` (see :class:`RequantArgs`).

    Parameters
    ----------
    acc_addr : int
        First accumulator line.
    count : int
        Number of lines, ``1 .. 2**COUNT_WIDTH - 1``.
    load_params : bool
        Load the next ``ppu_param`` beat into the requantiser first.
    """
    acc_addr: int
    count: int
    load_params: bool = False

    opcode: ClassVar[Opcode] = Opcode.REQUANT
    member: ClassVar[str | None] = "requant"


@dataclasses.dataclass(frozen=True)
class Fence:
    """``FENCE``: wait until every earlier command has completed."""
    opcode: ClassVar[Opcode] = Opcode.FENCE
    member: ClassVar[str | None] = None


@dataclasses.dataclass(frozen=True)
class Add:
    """``ADD``: element-wise int8 addition of two runs of ``count`` scratchpad lines (see :class:`AddArgs`).

    Parameters
    ----------
    a_addr, b_addr : int
        Scratchpad lines of the first elements of the two operands.
    count : int
        Number of line pairs, ``1 .. 2**COUNT_WIDTH - 1``.
    load_params : bool
        Load the next ``add_param`` beat into the adder first.
    """
    a_addr: int
    b_addr: int
    count: int
    load_params: bool = False

    opcode: ClassVar[Opcode] = Opcode.ADD
    member: ClassVar[str | None] = "add"


@dataclasses.dataclass(frozen=True)
class Pool:
    """``POOL``: pooling of ``count`` scratchpad lines in windows of ``window`` lines (see :class:`PoolArgs`).

    Parameters
    ----------
    addr : int
        Scratchpad line of the first input line.
    count : int
        Number of input lines, ``1 .. 2**COUNT_WIDTH - 1``.
    window : int
        Lines per window, ``1 .. POOL_MAX_WINDOW``.
    mode : PoolMode
        ``PoolMode.MAX`` or ``PoolMode.AVERAGE``.
    act_min, act_max : int
        Clamp bounds, int8. Default: no clamping.
    """
    addr: int
    count: int
    window: int
    mode: PoolMode = PoolMode.MAX
    act_min: int = -128
    act_max: int = 127

    opcode: ClassVar[Opcode] = Opcode.POOL
    member: ClassVar[str | None] = "pool"


@dataclasses.dataclass(frozen=True)
class Dwconv:
    """``DWCONV``: depthwise 3 x 3 convolution of one channel group through the requantiser (see
    :class:`DwconvArgs`).

    Parameters
    ----------
    act_addr : int
        Scratchpad line of pixel (0, 0) of the input tile (raster order, one line per pixel).
    weight_addr : int
        Scratchpad line of the first of the 9 weight lines.
    height, width : int
        Input tile size, ``1 .. 2**DWCONV_SIZE_WIDTH - 1``; with the padding at least 3 x 3.
    stride2 : bool
        Stride 2 instead of 1.
    pad_top, pad_bottom, pad_left, pad_right : int
        Zero-point padding around the tile, 0 or 1 each.
    zero_point : int
        Input zero point, int8.
    load_params : bool
        Load the next ``ppu_param`` beat into the requantiser first.
    """
    act_addr: int
    weight_addr: int
    height: int
    width: int
    stride2: bool = False
    pad_top: int = 0
    pad_bottom: int = 0
    pad_left: int = 0
    pad_right: int = 0
    zero_point: int = 0
    load_params: bool = False

    opcode: ClassVar[Opcode] = Opcode.DWCONV
    member: ClassVar[str | None] = "dwconv"

    @property
    def stride(self):
        return 2 if self.stride2 else 1

    @property
    def padding(self):
        """``((top, bottom), (left, right))``."""
        return (self.pad_top, self.pad_bottom), (self.pad_left, self.pad_right)

    @property
    def output_size(self):
        """``(out_h, out_w)``: the output pixels, sent as ``out_h * out_w`` lines."""
        return dwconv_output_size(self.height, self.width, self.stride, self.padding)


#: The command classes, by opcode.
COMMANDS = {cls.opcode: cls for cls in (Nop, Matmul, Requant, Fence, Add, Pool, Dwconv)}

_FLAGS = {"accumulate", "load_params", "stride2"}


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class CommandFormat:
    """Encoder, decoder and checker of the command words of one datapath configuration.

    Parameters
    ----------
    config : DatapathConfig, optional
        Default: ``DatapathConfig()``.

    Attributes
    ----------
    config : DatapathConfig
    layout : CommandWord
        The layout of a command word (the hardware's ``cmd.payload``).
    width : int
        Bits in a command word.
    """

    def __init__(self, config=None):
        if config is None:
            config = DatapathConfig()
        elif not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        self.config = config
        self.layout = CommandWord(config)
        self.width = self.layout.size

    def _member_layout(self, cls):
        return self.layout.members["args"].members[cls.member]

    def check(self, cmd):
        """Check that ``cmd`` can be encoded and is legal; raise :class:`CommandError` (or ``TypeError``) if not.

        Legal means: every field fits its width, counts are at least 1, a pooling window is in
        ``1 .. POOL_MAX_WINDOW``, a ``DWCONV`` tile is at least one pixel and, padded, at least 3 x 3, and every line
        range lies inside its memory (``count`` lines from each address, a weight tile :func:`weight_tile_lines`
        lines, a ``DWCONV`` tile ``height * width`` lines and its 9 weight lines). These are exactly the checks the hardware makes
        (:class:`ErrorCode`), except :attr:`ErrorCode.UNSUPPORTED`, which depends on the units the hardware has.
        """
        cls = type(cmd)
        if cls not in COMMANDS.values():
            raise TypeError(f"Command must be one of {', '.join(c.__name__ for c in COMMANDS.values())}, "
                            f"not {cmd!r}")
        name = cls.opcode.name
        if cls.member is None:
            return
        for field_name, field in self._member_layout(cls):
            value = getattr(cmd, field_name)
            if field_name in _FLAGS:
                if not isinstance(value, (bool, int)) or value not in (0, 1):
                    raise TypeError(f"{name} {field_name} must be a bool, not {value!r}")
                continue
            if isinstance(field.shape, type) and issubclass(field.shape, enum.Enum):
                if not isinstance(value, field.shape):
                    raise TypeError(f"{name} {field_name} must be a {field.shape.__name__}, not {value!r}")
                continue
            if not _is_int(value):
                raise TypeError(f"{name} {field_name} must be an integer, not {value!r}")
            shape = Shape.cast(field.shape)
            if shape.signed:
                low, high = -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
                if not low <= value <= high:
                    raise CommandError(f"{name} {field_name} {value} is not in the range {low} .. {high}")
                continue
            if value < 0:
                raise CommandError(f"{name} {field_name} must not be negative, not {value}")
            if value >> field.width:
                raise CommandError(f"{name} {field_name} {value} does not fit in {field.width} bits")
        if cls is Dwconv:
            k = DWCONV_KERNEL
            for what, size, pads in (("height", cmd.height, cmd.pad_top + cmd.pad_bottom),
                                     ("width", cmd.width, cmd.pad_left + cmd.pad_right)):
                if size < 1:
                    raise CommandError(f"DWCONV {what} must be at least 1, not {size}")
                if size + pads < k:
                    raise CommandError(f"DWCONV {what} {size} with padding {pads} must be at least {k} (the kernel)")
        elif cmd.count < 1:
            raise CommandError(f"{name} count must be at least 1, not {cmd.count}")
        if cls is Pool and not 1 <= cmd.window <= POOL_MAX_WINDOW:
            raise CommandError(f"POOL window must be in 1 .. {POOL_MAX_WINDOW}, not {cmd.window}")

        cfg = self.config
        ranges = []
        if cls is Matmul:
            ranges += [("activations", cmd.act_addr, cmd.count, "scratchpad", cfg.spad_depth),
                       ("weight tile", cmd.weight_addr, weight_tile_lines(cfg), "scratchpad", cfg.spad_depth)]
        if cls in (Matmul, Requant):
            ranges.append(("results" if cls is Matmul else "read-out", cmd.acc_addr, cmd.count, "accumulator",
                           cfg.acc_depth))
        if cls is Add:
            ranges += [("first operand", cmd.a_addr, cmd.count, "scratchpad", cfg.spad_depth),
                       ("second operand", cmd.b_addr, cmd.count, "scratchpad", cfg.spad_depth)]
        if cls is Pool:
            ranges.append(("input", cmd.addr, cmd.count, "scratchpad", cfg.spad_depth))
        if cls is Dwconv:
            ranges += [("input tile", cmd.act_addr, cmd.height * cmd.width, "scratchpad", cfg.spad_depth),
                       ("weights", cmd.weight_addr, DWCONV_KERNEL ** 2, "scratchpad", cfg.spad_depth)]
        for what, first, count, memory, depth in ranges:
            if first + count > depth:
                raise CommandError(f"{name} {what} would use lines {first}..{first + count - 1}, past the end of "
                                   f"the {memory} ({depth} lines)")

    def encode(self, cmd):
        """The command word of ``cmd``, as an integer of :attr:`width` bits. Checks ``cmd`` first (:meth:`check`).
        """
        self.check(cmd)
        init = {"opcode": cmd.opcode}
        if cmd.member is not None:
            init["args"] = {cmd.member: {name: getattr(cmd, name) if isinstance(getattr(cmd, name), enum.Enum)
                                         else int(getattr(cmd, name))
                                         for name, _ in self._member_layout(type(cmd))}}
        return self.layout.const(init).as_value().value

    def decode(self, word):
        """The command of a command word. Raises :class:`CommandError` for a word of the wrong width or with an
        illegal opcode; the argument bits of commands without arguments and the padding are ignored."""
        if not _is_int(word):
            raise TypeError(f"Command word must be an integer, not {word!r}")
        if word < 0 or word >> self.width:
            raise CommandError(f"Command word {word:#x} does not fit in {self.width} bits")
        raw_opcode = word & ((1 << OPCODE_WIDTH) - 1)
        try:
            opcode = Opcode(raw_opcode)
        except ValueError:
            raise CommandError(f"Illegal opcode {raw_opcode} in command word {word:#x}") from None
        cls = COMMANDS[opcode]
        if cls.member is None:
            return cls()
        args = self.layout.from_bits(word).args[cls.member]
        values = {}
        for name, _ in self._member_layout(cls):
            value = args[name]
            if name in _FLAGS:
                value = bool(value)
            elif not isinstance(value, enum.Enum):
                value = int(value)
            values[name] = value
        return cls(**values)

    def fields(self):
        """The fields of every command, for documentation: a list of ``(opcode, field, lsb, width)`` with ``lsb``
        the bit position in the command word."""
        rows = []
        args_offset = self.layout["args"].offset
        for opcode, cls in COMMANDS.items():
            rows.append((opcode, "opcode", 0, OPCODE_WIDTH))
            if cls.member is not None:
                for name, field in self._member_layout(cls):
                    rows.append((opcode, name, args_offset + field.offset, field.width))
        return rows


def encode(cmd, config=None):
    """The command word of ``cmd`` for ``config`` (default ``DatapathConfig()``), as an integer.

    See :meth:`CommandFormat.encode`; build a :class:`CommandFormat` once to encode many commands.
    """
    return CommandFormat(config).encode(cmd)


def decode(word, config=None):
    """The command of the command word ``word`` for ``config`` (default ``DatapathConfig()``).

    See :meth:`CommandFormat.decode`.
    """
    return CommandFormat(config).decode(word)


def _markdown(text):
    """reStructuredText markup of the docstrings as Markdown: roles and double backquotes become code spans."""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")


def _member_docs(cls):
    """``{name: description}`` from the numpydoc ``Members`` section of the docstring of ``cls``."""
    lines = cls.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Members") + 2
    docs, name = {}, None
    for line in lines[start:]:
        if not line.strip():
            break
        if line.startswith(" " * 8):
            docs[name].append(line.strip())
        else:
            name = line.split(":")[0].strip()
            docs[name] = []
    return {name: _markdown(" ".join(text)) for name, text in docs.items()}


def command_table(config=None):
    """The command set as Markdown: one table of opcodes and one of fields with their bit positions.

    Generated from the layouts and their docstrings, so ``docs/datapath.md`` can hold it verbatim (a test checks
    that it does, for the default configuration).
    """
    fmt = CommandFormat(config)
    cfg = fmt.config
    out = [f"Command word: {fmt.width} bits (`rows={cfg.rows}, cols={cfg.cols}, spad_depth={cfg.spad_depth}, "
           f"acc_depth={cfg.acc_depth}`); unused bits are zero.", "",
           "| opcode | value | arguments | what it does |", "|---|---|---|---|"]
    arg_docs = {"matmul": MatmulArgs, "requant": RequantArgs, "add": AddArgs, "pool": PoolArgs, "dwconv": DwconvArgs}
    opcode_docs = _member_docs(Opcode)
    for opcode, cls in COMMANDS.items():
        args = f"`{arg_docs[cls.member].__name__}`" if cls.member else "none"
        out.append(f"| `{opcode.name}` | {opcode.value} | {args} | {opcode_docs[opcode.name]} |")
    out += ["", "| command | field | bits | description |", "|---|---|---|---|"]
    for opcode, name, lsb, width in fmt.fields():
        cls = COMMANDS[opcode]
        if cls.member is None:
            continue
        bits = f"{lsb}" if width == 1 else f"{lsb + width - 1}:{lsb}"
        doc = "the operation" if name == "opcode" else _member_docs(arg_docs[cls.member])[name]
        out.append(f"| `{opcode.name}` | `{name}` | {bits} | {doc} |")
    return "\n".join(out) + "\n"
