"""The base of every error keras-repvgg raises for bad input.

The command line prints these as one line (status 2); anything else is a bug of ours or
of a library below, and is shown as an internal error. Subclasses name the file, key or
option at fault and the expected and actual values.
"""

from __future__ import annotations


class KerasRepVGGError(ValueError):
    """Bad input to keras-repvgg: a file, an option or a model it cannot use."""
