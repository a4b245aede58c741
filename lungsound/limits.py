"""Bounds on the counts and seeds a user may ask for, checked before any work starts.

A count given on the command line or to the Python API sizes an array, a loop or a folder of files, so an absurd one
(`--per-class 1000000000` asked for a 7.5 GB array; `--seeds 1-100000` planned 100,000 runs) must be refused at once
in one line rather than run out of memory or time. Each bound is far above any real use and is stated in the option's
--help:

- `MAX_SEED`: a seed is an integer from 0 to 2**31 - 1 (what every random generator here accepts, on every platform);
- `MAX_SEEDS`: a group, grid or sweep runs at most 1,000 seeds per cell (published tables use 5);
- `MAX_PER_CLASS`: a generated set has at most 100,000 clips per class (about 12 GB of 16-bit audio per class;
  [AFT]'s largest set has 2,000);
- `MAX_RECORDINGS`: a built-in synthetic set has at most 10,000 recordings (about ten ICBHI archives);
- `MAX_BATCH`: a vocoding batch holds at most 1,024 clips;
- `MAX_STEP`: `--stop-after` is an epoch or step from 1 to 2**31 - 1.
"""

from __future__ import annotations

import operator

from lungsound.errors import LungsoundError

MAX_SEED = 2**31 - 1
MAX_SEEDS = 1000
MAX_PER_CLASS = 100_000
MAX_RECORDINGS = 10_000
MAX_BATCH = 1024
MAX_STEP = 2**31 - 1
SEEDS_RULE = f"at most {MAX_SEEDS:,} seeds, each from 0 to {MAX_SEED:,}"  # for the --help of every --seeds


def check_int(name: str, value, low: int, high: int) -> int:
    """`value` as an int when it is an integer from `low` to `high`, else a one-line error naming `name`."""
    try:
        number = operator.index(value)  # an int or a NumPy integer; not a bool, float or string
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or not low <= number <= high:
        raise LungsoundError(f"{name} must be an integer from {low:,} to {high:,}, got {value!r}")
    return number


def check_stop_after(value) -> int | None:
    """`--stop-after`: None (run to the end) or an epoch/step from 1 to `MAX_STEP`."""
    return None if value is None else check_int("--stop-after", value, 1, MAX_STEP)
