"""A string array's Arrow buffers read with numpy, without a copy and without an Arrow kernel.

The parser makes string arrays without nulls, so a value's bytes are `data[offsets[i]:
offsets[i + 1]]`. Reading lengths and bytes off the buffers this way is cheaper than an Arrow
kernel that makes a new array (and, for a mask, a boolean array to unpack): the transform's
checks, the parser's count of line endings in values and the JSON Lines writer all use it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def offsets(strings: pa.Array) -> np.ndarray:
    """The array's value offsets (int32, one more than its values), a view."""
    return np.frombuffer(strings.buffers()[1], np.int32, len(strings) + 1, strings.offset * 4)


def lengths(strings: pa.Array) -> np.ndarray:
    """The byte length of each value."""
    return np.diff(offsets(strings))


def value_buffer(strings: pa.Array) -> pa.Buffer:
    """The bytes of the array's values, back to back (a slice, not a copy)."""
    data = strings.buffers()[2]
    if data is None:
        return pa.py_buffer(b"")
    bounds = offsets(strings)
    return data.slice(int(bounds[0]), int(bounds[-1] - bounds[0]))


def value_bytes(strings: pa.Array) -> np.ndarray:
    """The bytes of the array's values, back to back (a view, not a copy)."""
    return np.frombuffer(value_buffer(strings), np.uint8)
