"""What the part-based benchmarks (`science`, `search`) share: running their parts in order, timed, and failing on
bad input with one line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def fail(error: Exception) -> None:
    """An expected error: one line, exit code 2 (a traceback means a bug)."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def run_parts(parts: tuple[str, ...], runners: dict[str, tuple[Callable, ...]], context,
              elapsed: dict[str, float]) -> dict:
    """Runs `runners[part][0](context)` for each part in order, printing and recording each one's wall time in
    `elapsed`; returns the results by part."""
    results = {}
    for part in parts:
        print(f"{part}:", flush=True)
        start = time.perf_counter()
        results[part] = runners[part][0](context)
        elapsed[part] = time.perf_counter() - start
        print(f"{part}: {elapsed[part]:.0f} s", flush=True)
    return results
