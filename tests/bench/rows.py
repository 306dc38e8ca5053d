"""The benchmarks' CSV rows: 7 columns with quoted delimiters, doubled quotes and embedded
newlines, the same values for a given id and random generator in every benchmark."""

from __future__ import annotations

import random
from typing import Any

HEADER = ["id", "name", "email", "amount", "date", "comment", "code"]
WORDS = ["alpha", "beta", "gamma", "delta", "eps, ilon", 'ze"ta', "eta", "th\neta"]


def row(i: int, rng: random.Random) -> list[Any]:
    return [
        i,
        f"{rng.choice(WORDS)} {rng.choice(WORDS)}",
        f"user{i}@example.com",
        f"{rng.random() * 1000:.2f}",
        f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
        " ".join(rng.choice(WORDS) for _ in range(4)),
        f"{i % 1000:05d}",
    ]
