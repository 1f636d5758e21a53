"""Arrays handed to numba kernels: read-only inputs, so each kernel has one compiled version.

Numba compiles a separate version of a kernel for a read-only and for a writable array argument.
Arrays that arrive from the wire are read-only buffers and locally computed ones are writable, so
without a common form a first run compiles many kernels twice. Inputs a kernel only reads are
therefore always passed as read-only views (no copy).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

_A = TypeVar("_A", bound=np.ndarray)


def readonly(a: _A) -> _A:
    """A read-only view of ``a`` (``a`` itself when it is already read-only)."""
    if not a.flags.writeable:
        return a
    view = a.view()
    view.flags.writeable = False
    return view
