"""Errors that Haneul reports to its users.

Every error a user can cause (a model we cannot run, an input of the wrong shape, an illegal command) is a
:class:`HaneulError`: the command-line tool prints its message and exits with status 2, without a traceback.
"""

__all__ = ["HaneulError", "ModelError", "UnsupportedError", "InputError"]


class HaneulError(Exception):
    """Base class of the errors that Haneul reports to its users."""


class ModelError(HaneulError):
    """The model file is malformed or inconsistent (bad flatbuffer, bad tensor, bad shape)."""


class UnsupportedError(ModelError):
    """The model is valid TFLite but uses something Haneul does not run (a float model, an operator, an attribute)."""


class InputError(HaneulError):
    """An input given to a model has the wrong shape, dtype or format."""
