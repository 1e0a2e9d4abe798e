"""The bit-exact numpy golden model: TFLite reference-kernel arithmetic on the Haneul graph IR."""

from .interpreter import run, check_inputs

__all__ = ["run", "check_inputs"]
