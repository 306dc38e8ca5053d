"""The processors shipped in the default image, each a real use.

- `hash-columns`: replaces the named columns by HMAC-SHA256 (hex) of their values, with a
  key from an env variable that the CollectJob fills from a Secret. Pseudonymises personal
  data before it lands in the sink; equal values stay equal, so joins still work.
- `drop-duplicates`: keeps the first row of each key, within a chunk and across chunks, and
  rejects the others (reason names the key columns), so every source row is accounted for.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from collectjob_worker.processors.context import ChunkContext, ProcessorError

MIN_KEY_BYTES = 16
"""A shorter HMAC key is refused: it would make the pseudonyms guessable."""
SEEN_KEYS = "drop-duplicates/seen"
DEFAULT_MAX_KEYS = 10_000_000


def hash_columns(frame: pd.DataFrame, context: ChunkContext) -> pd.DataFrame:
    columns = _columns(context, frame)
    key = _key(context)
    for name in columns:
        values = pa.array(frame[name].array) if len(frame) else pa.array([], pa.string())
        encoded = pc.dictionary_encode(values.cast(pa.string()))
        digests = [
            None if v is None else hmac.digest(key, v.encode("utf-8"), hashlib.sha256).hex()
            for v in encoded.dictionary.to_pylist()
        ]
        hashed = pa.array(digests, pa.string()).take(encoded.indices)
        frame[name] = pd.Series(pd.arrays.ArrowExtensionArray(hashed), index=frame.index)
    return frame


def drop_duplicates(frame: pd.DataFrame, context: ChunkContext) -> pd.DataFrame:
    columns = _columns(context, frame)
    limit = context.options.get("maxKeys", DEFAULT_MAX_KEYS)
    if not isinstance(limit, int) or limit <= 0:
        raise ProcessorError("drop-duplicates: options.maxKeys must be a positive integer")
    seen = np.frombuffer(context.state.get(SEEN_KEYS, b""), dtype=np.uint64)
    keys = _key_hashes(frame, columns)
    first_here = ~pd.Series(keys).duplicated().to_numpy()
    new = first_here & ~np.isin(keys, seen)
    if len(frame) and not new.all():
        context.reject(frame.index[~new], f"duplicate key ({', '.join(columns)})")
    merged = np.union1d(seen, keys[new])
    if merged.size > limit:
        raise ProcessorError(
            f"drop-duplicates: {merged.size} distinct keys exceed options.maxKeys={limit}; "
            "raise the cap (state grows 8 bytes per key) or deduplicate in smaller jobs"
        )
    context.state[SEEN_KEYS] = merged.astype(np.uint64).tobytes()
    return frame[new]


def _key_hashes(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each row's key; the same key gives the same hash in every run.
    Collisions are possible in principle (about 1 in 10^7 at a million keys) and would
    reject a row as a duplicate, never duplicate one."""
    if not len(frame):
        return np.zeros(0, np.uint64)
    keyed = frame[list(columns)].astype("string[pyarrow]").fillna("\x00<null>")
    return pd.util.hash_pandas_object(keyed, index=False).to_numpy(np.uint64)


def _columns(context: ChunkContext, frame: pd.DataFrame) -> list[str]:
    columns: Any = context.options.get("columns")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise ProcessorError("options.columns must be a non-empty list of column names")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ProcessorError(
            f"options.columns names {', '.join(missing)}, not in the rows' columns "
            f"({', '.join(map(str, frame.columns))})"
        )
    return columns


def _key(context: ChunkContext) -> bytes:
    name = context.options.get("keyEnv")
    if not isinstance(name, str) or not name:
        raise ProcessorError("hash-columns: options.keyEnv must name an env variable")
    value = os.environ.get(name, "")
    if len(value.encode()) < MIN_KEY_BYTES:
        raise ProcessorError(
            f"hash-columns: the key in env variable {name} is missing or shorter than "
            f"{MIN_KEY_BYTES} bytes (fill it from a Secret with secretKeyRef)"
        )
    return value.encode()
