"""The scratchpad's bank geometry, for the compiler's memory plans (and the cycle model), defined once.

The scratchpad (:class:`haneul.rtl.scratchpad.Scratchpad`) is ``DatapathConfig.spad_banks`` banks of
``spad_depth / spad_banks`` lines; the bank of a line is its top address bits, so bank ``b`` holds lines
``b * bank_lines .. (b + 1) * bank_lines - 1``. A bank serves one read per cycle, round robin between the read ports
that want it, and a port granted without room for the line loses that turn for both (``docs/memories.md``). A
``MATMUL`` reads its activation lines on one port and weight tiles on the other, so a plan keeps the two in
different banks (:func:`separate`): 4 banks at the default size.
"""

from haneul.rtl.config import DatapathConfig

__all__ = ["bank_lines", "bank_of", "banks_of", "bank_boundary", "separate"]


def bank_lines(config: DatapathConfig) -> int:
    """Lines per scratchpad bank: ``spad_depth // spad_banks``."""
    return config.spad_depth // config.spad_banks


def bank_of(config: DatapathConfig, line: int) -> int:
    """The bank of scratchpad line ``line``."""
    return line // bank_lines(config)


def banks_of(config: DatapathConfig, first: int, count: int) -> frozenset:
    """The banks of lines ``first .. first + count - 1`` (empty for ``count = 0``)."""
    if count <= 0:
        return frozenset()
    return frozenset(range(bank_of(config, first), bank_of(config, first + count - 1) + 1))


def bank_boundary(config: DatapathConfig, line: int) -> int:
    """The first line at or after ``line`` that starts a bank (``spad_depth`` past the last bank)."""
    size = bank_lines(config)
    return -(-line // size) * size


def separate(config: DatapathConfig, *regions) -> bool:
    """Whether no bank holds lines of two of ``regions`` (``(first, count)`` pairs)."""
    seen = set()
    for first, count in regions:
        banks = banks_of(config, first, count)
        if seen & banks:
            return False
        seen |= banks
    return True
