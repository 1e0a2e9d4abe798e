"""Datapath parameters of the Haneul NPU, defined once.

Every block that depends on the size of the compute core (the systolic array, the scratchpad, the accumulator memory,
the sequencer and the compiler that targets them) reads its parameters from one :class:`DatapathConfig`, so that
resizing the NPU is a one-line change::

    from haneul.rtl.config import DatapathConfig

    cfg = DatapathConfig(rows=8, cols=8)     # an 8x8 array, everything else default
    cfg.macs_per_cycle                       # 64
    cfg.pe_mult(0, 0)                        # "chain": the multiplier type of processing element (0, 0)

The configuration is a frozen dataclass: it is hashable, can be compared, and is validated eagerly when constructed,
so a bad parameter is reported where it is written rather than deep inside elaboration.
"""

import dataclasses

from amaranth.hdl import Shape, signed

__all__ = ["DatapathConfig", "ACT_HOP", "WEIGHT_HOP"]

#: Columns of processing elements an activation crosses per cycle in the systolic array: the PEs of a group of
#: ``ACT_HOP`` adjacent columns take the same activation register, and the group's last PE passes it on
#: (:mod:`haneul.rtl.systolic`). Fewer pipeline registers (8 bits and a marker per PE saved out of 2) and a shorter
#: wavefront, each net a little longer.
ACT_HOP = 2

#: Rows of processing elements a weight write crosses per cycle on its way down a column of the systolic array
#: (the weight bus registers are shared by ``WEIGHT_HOP`` adjacent PEs of a column).
WEIGHT_HOP = 2


def _is_int(value):
    # ``bool`` is a subclass of ``int``; ``rows=True`` is a mistake, not a row count of one.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_pow2(value):
    return value > 0 and value & (value - 1) == 0


@dataclasses.dataclass(frozen=True)
class DatapathConfig:
    """Parameters of the Haneul datapath.

    The systolic array multiplies a ``M x rows`` activation tile by a ``rows x cols`` weight tile: ``rows`` is the
    reduction (K) dimension held in the array, ``cols`` the output-channel (N) dimension.

    Parameters
    ----------
    rows : int
        Rows of processing elements, i.e. the K (reduction) depth of one weight tile, and the number of int8 elements
        of one activation vector (one scratchpad row). Default 16.
    cols : int
        Columns of processing elements, i.e. the N width of one weight tile, and the number of int32 elements of one
        result vector (one accumulator row). Default 16.
    input_width : int
        Width in bits of activations and weights (two's complement). Default 8 (int8).
    acc_width : int
        Width in bits of partial sums and accumulators (two's complement). Default 32 (int32). It must hold the sum
        of ``rows`` worst-case products (``-2**(input_width-1)`` squared) without overflow.
    spad_depth : int
        Rows in the scratchpad (input and weight memory); each row holds ``rows`` input elements. Power of two.
        Default 2048 (32 KiB for 16 int8 elements per row).
    spad_banks : int
        Independently addressed banks of the scratchpad, so that DMA and the array can use it at the same time.
        Power of two, dividing ``spad_depth``. Default 4.
    acc_depth : int
        Rows in the accumulator memory; each row holds ``cols`` accumulators. Power of two.
        Default 512 (32 KiB for 16 int32 elements per row).
    acc_banks : int
        Banks of the accumulator memory. Power of two, dividing ``acc_depth``. Default 2.
    dsp_pes : int
        Budget of processing elements whose multiplier is a DSP block (one ``MULT18X18D`` each on ECP5); the other
        PEs build their multiplier from LUTs (``lut_mult``). PEs are given DSPs whole columns first, column 0 first
        and top to bottom (see :meth:`pe_mult`); a budget above ``rows * cols`` makes every PE a DSP PE, 0 none.
        Default 0: every PE a LUT PE. On an ECP5-85F the DSP blocks sit in a few rows of the die, and an array
        whose PEs must take DSP sites is stretched over all of them: the 16 x 16 datapath without the depthwise
        unit routed at 70.7 MHz with 96 DSP PEs and at 94.1 MHz with none (same commit and seed). The DSP blocks
        go to the post-processing units (4 per requantiser lane: 32 for 8 lanes; 16 for the pooling unit, 8 per
        adder lane) and the depthwise unit (``dw_mult``). ``docs/fpga.md`` has the budget.
    lut_mult : str
        Multiplier type of the PEs beyond the DSP budget: a LUT-based type of
        :data:`haneul.rtl.pe.MULTIPLIERS` (``"chain"``, shift-and-add with the rows selected inside the carry
        chains; ``"booth"``, radix-4 Booth; ``"lut"``, shift-and-add). Default ``"chain"``: the 16 x 16 array with
        it needs about a third fewer LUTs than with Booth PEs on ECP5 (``docs/fpga.md``).
    add_lanes : int
        Pipeline lanes of the element-wise adder (:class:`haneul.rtl.eltwise.Adder`, ``fold = rows // add_lanes``):
        it takes a line of ``rows`` elements in ``rows // add_lanes`` cycles, with three multipliers per pipeline
        lane (8 ECP5 DSP blocks). A divisor of ``rows``. Default 1: one line every ``rows`` cycles, 8 DSP blocks;
        a 16-lane adder (128) does not fit an ECP5-85F beside the array and the requantiser (``docs/fpga.md``).
    requant_lanes : int
        Most pipeline lanes of the requantiser (:class:`haneul.rtl.ppu.Requantizer`): it takes an accumulator line
        in :attr:`requant_fold` ``= ceil(cols / requant_lanes)`` cycles, on ``ceil(cols / requant_fold)`` pipeline
        lanes of four multipliers each. At least ``cols`` gives one line per cycle. Default 4: a 16-column line
        every 4 cycles, which keeps pace with the array in GEMMs of four K-tiles or more (a read-out line per
        ``ceil(K / rows)`` cycles of MACs) but not in smaller ones, and whose last output tile is read out after
        the array has finished (``M`` lines at 4 cycles), with 16 DSP blocks (32 with 8 lanes, 64 with 16) and about two
        thirds of the LUTs of 8 lanes; 8 lanes (a line every 2 cycles) until session 13, when the full 16 x 16
        datapath first routed on the ECP5-85F with 4 (``docs/fpga.md``).
    dw_taps : int
        Multipliers per lane of the depthwise unit (:class:`haneul.rtl.depthwise.DepthwiseUnit`): a 3 x 3 window
        goes through it in :attr:`dw_passes` ``= ceil(9 / dw_taps)`` beats on consecutive cycles
        (``commands.DWCONV_KERNEL``: 3). At most 9 (one beat per window). Default 3: three cycles per window,
        which the scratchpad's two read ports match at stride 2 (a window every 3 cycles) and outpace at stride 1
        (every 1.5 cycles at best, 2 to 3 as measured on the datapath), for 48 multipliers instead of 80 with 5
        taps or 144 with 9: with 5 (the default until session 13) the full 16 x 16 datapath did not route on the
        ECP5-85F (``docs/depthwise.md``, ``docs/fpga.md``).
    dw_mult : str
        Multipliers of the depthwise unit (``DepthwiseUnit.MULTIPLIERS``): ``"lut"``, shift-and-add rows in carry
        chains (about 6 600 LUTs at 16 x 16 with 3 taps), or ``"dsp"``, one DSP block per multiplier
        (``rows * dw_taps``: 48 at 16 x 16). Default ``"lut"`` (``"dsp"`` from session 9 to session 15): the 16 x 16
        datapath routes 8-9 MHz faster on the ECP5-85F without the depthwise unit's routes into and out of the DSP
        columns, for about 5 000 LUT4 more (``docs/fpga.md``).

    Raises
    ------
    TypeError
        If a parameter is not an integer.
    ValueError
        If a parameter is out of range or the parameters are inconsistent.
    """

    rows: int = 16
    cols: int = 16
    input_width: int = 8
    acc_width: int = 32
    spad_depth: int = 2048
    spad_banks: int = 4
    acc_depth: int = 512
    acc_banks: int = 2
    dsp_pes: int = 0
    lut_mult: str = "chain"
    add_lanes: int = 1
    requant_lanes: int = 4
    dw_taps: int = 3
    dw_mult: str = "lut"

    def __post_init__(self):
        for name, what in (("rows", "Row count"), ("cols", "Column count"),
                           ("input_width", "Input width"), ("acc_width", "Accumulator width"),
                           ("spad_depth", "Scratchpad depth"), ("spad_banks", "Scratchpad bank count"),
                           ("acc_depth", "Accumulator depth"), ("acc_banks", "Accumulator bank count")):
            value = getattr(self, name)
            if not _is_int(value):
                raise TypeError(f"{what} must be a positive integer, not {value!r}")
            if value <= 0:
                raise ValueError(f"{what} must be a positive integer, not {value!r}")

        if self.input_width < 2:
            raise ValueError(f"Input width must be at least 2 bits, not {self.input_width!r}")
        worst = self.rows * (1 << (2 * self.input_width - 2))  # rows * (-2**(w-1))**2
        if worst > (1 << (self.acc_width - 1)) - 1:
            raise ValueError(
                f"Accumulator width {self.acc_width} cannot hold the sum of {self.rows} products of "
                f"{self.input_width}-bit inputs (up to {worst}); use at least {worst.bit_length() + 1} bits")

        for depth_name, banks_name, what in (("spad_depth", "spad_banks", "Scratchpad"),
                                             ("acc_depth", "acc_banks", "Accumulator")):
            depth, banks = getattr(self, depth_name), getattr(self, banks_name)
            if not _is_pow2(depth):
                raise ValueError(f"{what} depth must be a power of two, not {depth!r}")
            if not _is_pow2(banks):
                raise ValueError(f"{what} bank count must be a power of two, not {banks!r}")
            if banks > depth:
                raise ValueError(f"{what} bank count {banks} exceeds its depth {depth}")

        if not _is_int(self.dsp_pes):
            raise TypeError(f"DSP PE budget must be a non-negative integer, not {self.dsp_pes!r}")
        if self.dsp_pes < 0:
            raise ValueError(f"DSP PE budget must be a non-negative integer, not {self.dsp_pes!r}")
        if not _is_int(self.add_lanes):
            raise TypeError(f"Adder lane count must be a positive integer, not {self.add_lanes!r}")
        if self.add_lanes <= 0 or self.rows % self.add_lanes:
            raise ValueError(f"Adder lane count must be a positive divisor of the row count {self.rows}, "
                             f"not {self.add_lanes!r}")
        if not _is_int(self.requant_lanes):
            raise TypeError(f"Requantiser lane count must be a positive integer, not {self.requant_lanes!r}")
        if self.requant_lanes <= 0:
            raise ValueError(f"Requantiser lane count must be a positive integer, not {self.requant_lanes!r}")
        from .commands import DWCONV_KERNEL  # the DWCONV window is defined with the command
        window = DWCONV_KERNEL ** 2
        if not _is_int(self.dw_taps):
            raise TypeError(f"Depthwise tap count must be an integer in [1, {window}], not {self.dw_taps!r}")
        if not 1 <= self.dw_taps <= window:
            raise ValueError(f"Depthwise tap count must be an integer in [1, {window}], not {self.dw_taps!r}")
        dw_types = ("lut", "dsp")    # DepthwiseUnit.MULTIPLIERS (depthwise.py imports this module)
        if self.dw_mult not in dw_types:
            raise ValueError(f"Depthwise multiplier type must be one of {', '.join(map(repr, dw_types))}, "
                             f"not {self.dw_mult!r}")
        from .pe import MULTIPLIERS  # the registry of PE types lives with the PE
        lut_types = sorted(name for name, mult in MULTIPLIERS.items() if not mult.uses_dsp)
        if self.lut_mult not in lut_types:
            raise ValueError(f"LUT multiplier type must be one of {', '.join(map(repr, lut_types))}, "
                             f"not {self.lut_mult!r}")

    # Shapes ------------------------------------------------------------------------------------------------------

    @property
    def input_shape(self) -> Shape:
        """Shape of one activation or weight element (``signed(input_width)``)."""
        return signed(self.input_width)

    @property
    def acc_shape(self) -> Shape:
        """Shape of one partial sum or accumulator element (``signed(acc_width)``)."""
        return signed(self.acc_width)

    def psum_width(self, row) -> int:
        """Width in bits of the partial sums leaving array row ``row``: the sum of ``row + 1`` products.

        A product of two ``input_width``-bit signed values lies in ``[-2**(2w-2) + 2**(w-1), 2**(2w-2)]``, so the
        sum of ``row + 1`` of them needs ``((row + 1) * 2**(2w-2)).bit_length() + 1`` bits: 16 for the top row of
        an int8 array, 20 for row 15. Each row's adders and registers are that wide, not ``acc_width`` (the
        accumulator memory sums K-tiles in ``acc_width`` bits); the result is sign-extended as it leaves the array.
        """
        if not 0 <= row < self.rows:
            raise IndexError(f"Row {row} is outside the {self.rows}-row array")
        return min(self.acc_width, ((row + 1) << (2 * self.input_width - 2)).bit_length() + 1)

    # Derived sizes -----------------------------------------------------------------------------------------------

    @property
    def macs_per_cycle(self) -> int:
        """Multiply-accumulates the array performs per cycle at full throughput (``rows * cols``)."""
        return self.rows * self.cols

    @property
    def latency(self) -> int:
        """Cycles from an activation vector entering the systolic array to its result leaving
        (``rows + (cols - 1) // ACT_HOP + 6``: 29 at 16 x 16).

        1 in the input register, ``rows - 1`` cycles of row skew, :attr:`wavefront` ``(cols - 1) // ACT_HOP`` cycles
        for the activation to reach the last column, ``ProcessingElement.LATENCY`` (5) in the last PE (operand
        registers, three product registers, accumulator register) and 1 in the output FIFO.
        """
        from .pe import ProcessingElement  # the PE pipeline is defined with the PE
        return 1 + self.rows - 1 + self.wavefront(self.cols - 1) + ProcessingElement.LATENCY + 1

    @staticmethod
    def wavefront(col) -> int:
        """Cycles an activation takes from column 0 of the systolic array to column ``col``: ``col // ACT_HOP``."""
        return col // ACT_HOP

    @property
    def requant_fold(self) -> int:
        """Cycles the requantiser takes per accumulator line: ``ceil(cols / requant_lanes)``."""
        return -(-self.cols // self.requant_lanes)

    @property
    def dw_passes(self) -> int:
        """Beats (cycles) per 3 x 3 window in the depthwise unit: ``ceil(9 / dw_taps)``."""
        from .commands import DWCONV_KERNEL
        return -(-DWCONV_KERNEL ** 2 // self.dw_taps)

    # Processing element types ------------------------------------------------------------------------------------

    @property
    def dsp_count(self) -> int:
        """Processing elements with a DSP multiplier (``min(dsp_pes, rows * cols)``)."""
        return min(self.dsp_pes, self.rows * self.cols)

    def pe_mult(self, row, col) -> str:
        """Multiplier type (a key of :data:`haneul.rtl.pe.MULTIPLIERS`) of the processing element at ``(row, col)``.

        The first ``dsp_count`` PEs in column-major order (column 0 top to bottom, then column 1, ...) are ``"dsp"``,
        the others ``lut_mult``. Whole columns keep each partial-sum chain within one type, so the only wires
        between the DSP and LUT regions of the die are the activations, ``rows`` x 9 bits.
        """
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise IndexError(f"PE ({row}, {col}) is outside the {self.rows} x {self.cols} array")
        return "dsp" if col * self.rows + row < self.dsp_count else self.lut_mult

    @property
    def spad_row_bits(self) -> int:
        """Bits in one scratchpad row (one activation vector)."""
        return self.rows * self.input_width

    @property
    def spad_bytes(self) -> int:
        """Scratchpad capacity in bytes."""
        return self.spad_depth * self.spad_row_bits // 8

    @property
    def spad_addr_width(self) -> int:
        """Width of a scratchpad row address."""
        return max(1, (self.spad_depth - 1).bit_length())

    @property
    def acc_row_bits(self) -> int:
        """Bits in one accumulator row (one result vector)."""
        return self.cols * self.acc_width

    @property
    def acc_bytes(self) -> int:
        """Accumulator memory capacity in bytes."""
        return self.acc_depth * self.acc_row_bits // 8

    @property
    def acc_addr_width(self) -> int:
        """Width of an accumulator row address."""
        return max(1, (self.acc_depth - 1).bit_length())
