"""Trials made to fail on purpose: how tests and demos show that a search survives failures.

`SHRINKTUNE_FAIL_TRIALS="nan:2,raise:3,oom:1:1"` makes trial 2 fail with a NaN loss, trial 3 raise, and trial 1 run
out of memory on its first attempt only; the search records them as FAILED (after their retries) and goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from ray import tune

from shrinktune.errors import ConfigError

FAULTS_ENV = "SHRINKTUNE_FAIL_TRIALS"
FAULT_KINDS = ("raise", "nan", "oom", "memory")


@dataclass(frozen=True)
class Fault:
    """A trial made to fail on purpose, to test and show how a search copes with failures."""

    kind: str  # raise (RuntimeError) | nan (FloatingPointError) | oom (torch.OutOfMemoryError) | memory (MemoryError)
    trial: int  # the trial's number in the search, from 1, as in its folder name <trainable>_<id>_<number>_...
    attempts: int | None = None  # fail only this many first attempts (None: every attempt)

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"{FAULTS_ENV}: the fault kind must be one of {', '.join(FAULT_KINDS)}, got "
                              f"{self.kind!r}; fix it or unset {FAULTS_ENV}.")
        if self.trial < 1 or (self.attempts is not None and self.attempts < 1):
            raise ConfigError(f"{FAULTS_ENV}: trial numbers and attempts count from 1, got trial {self.trial} "
                              f"attempts {self.attempts}; fix it or unset {FAULTS_ENV}.")

    def error(self, attempt: int) -> BaseException:
        where = f"(injected by {FAULTS_ENV} into trial {self.trial}, attempt {attempt})"
        if self.kind == "nan":
            return FloatingPointError(f"training loss became nan {where}")
        if self.kind == "oom":
            return torch.OutOfMemoryError(f"out of memory {where}")
        if self.kind == "memory":
            return MemoryError(f"out of host memory {where}")
        return RuntimeError(f"trial failed {where}")


def parse_faults(text: str) -> tuple[Fault, ...]:
    """Reads a fault plan such as `nan:2,raise:3,oom:1:1` — KIND:TRIAL[:ATTEMPTS], comma-separated.

    `nan:2` makes trial 2 fail every attempt with a NaN loss; `oom:1:1` makes trial 1 run out of memory on its
    first attempt only (a retry then succeeds). An empty text is no plan.
    """
    faults = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not all(p.strip().isdigit() for p in parts[1:]):
            raise ConfigError(f"{FAULTS_ENV}: entries are KIND:TRIAL[:ATTEMPTS] (e.g. nan:2,raise:3:1), got "
                              f"{entry!r}; fix it or unset {FAULTS_ENV}.")
        faults.append(Fault(parts[0].strip(), int(parts[1]), int(parts[2]) if len(parts) == 3 else None))
    return tuple(faults)


def inject_fault(faults: tuple[Fault, ...]) -> None:
    """Raises this trial's planned fault, if any, counting attempts in the trial's folder (which a retry keeps)."""
    context = tune.get_context()
    folder = Path(context.get_trial_dir())
    number = re.match(re.escape(context.get_trial_name()) + r"_(\d+)", folder.name)
    planned = [f for f in faults if number and f.trial == int(number.group(1))]
    if not planned:
        return
    counter = folder / "shrinktune_attempts.txt"
    attempt = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(attempt))
    if planned[0].attempts is None or attempt <= planned[0].attempts:
        raise planned[0].error(attempt)
