"""The built-in default dataset: a synthetic ICBHI-format set made on first use.

Commands that need data and are given none use it; it lives in `$LUNGSOUND_CACHE/data/synthetic-default`
(default `~/.cache/lungsound/...`) and is written once, by `lungsound.data.synthetic.generate`, into a temporary folder
that is renamed into place when complete. Creation holds an inter-process lock, so processes started together wait for
the first one's set instead of each making (or deleting) their own; a finished set is never deleted.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

DEFAULT_SEED = 0
MARKER = "SYNTHETIC.json"


def cache_home() -> Path:
    return Path(os.environ.get("LUNGSOUND_CACHE", Path.home() / ".cache" / "lungsound"))


def default_data_dir() -> Path:
    return cache_home() / "data" / "synthetic-default"


def ensure_default_data(progress: bool = True) -> Path:
    """The default dataset's folder, generating it first when it does not exist yet."""
    target = default_data_dir()
    if (target / MARKER).exists():
        return target
    from lungsound.data.synthetic import generate
    from lungsound.storage import file_lock

    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / MARKER).exists():  # another process made it while this one waited for the lock
            return target
        print(f"lungsound: no data given; creating the built-in synthetic ICBHI-format set in {target} (once)",
              file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=target.parent))
        try:
            generate(tmp, seed=DEFAULT_SEED, progress=progress)
            if target.exists():  # a partial folder left by an older, interrupted version: never a finished set
                aside = target.with_name(f".{target.name}.partial-{os.getpid()}")
                os.replace(target, aside)
                shutil.rmtree(aside, ignore_errors=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def resolve_root(root: str | Path | None) -> Path:
    """`root` when given, otherwise the built-in set (created on first use, saying so in one line)."""
    if root is not None:
        return Path(root)
    target = default_data_dir()
    if (target / MARKER).exists():
        print(f"lungsound: using the built-in synthetic data in {target}", file=sys.stderr)
        return target
    return ensure_default_data()
