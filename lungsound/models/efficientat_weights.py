"""EfficientAT's AudioSet checkpoints ([EFFAT], docs/methods.md section 12): where they come from, how they are
checked, and how they load into :class:`lungsound.models.efficientat.EfficientAT`.

The checkpoints are release assets of the upstream project, ``RELEASE_URL + <file>``; ``weights="audioset"`` (or
``model.pretrained=audioset``) fetches the one of the model's width through the toolkit's checked download
(:func:`lungsound.data.download.download_file`: resumable, size and SHA-256 checked before the file is moved into
place) into ``$LUNGSOUND_CACHE/models/efficientat/`` (default ``~/.cache/lungsound``), and reads it from there after.
Checksums: mn04's size and SHA-256 are known (``../shared/models/README.md``) and checked on the download and on every
later load. mn05, mn10 and mn20's are not known to this module (no copy was available to measure them), so their first
download is trusted as it is (the policy of ``lungsound data download`` for the ICBHI archive): its SHA-256 is printed,
written beside it as ``<file>.sha256``, and every later load checks the file against that record. A local file
(``weights=PATH``) is used as given, except that a file carrying an official release name of known checksum must
have it. A download that fails (offline, unreachable) is one line saying how to pass a file instead.

Files are read with ``torch.load(..., weights_only=True)`` (no code runs from a checkpoint). The upstream layout is a
plain state dict: ``features.0`` .. ``features.16`` and the MLP head's ``classifier.2`` (Linear(C, H)) and
``classifier.5`` (Linear(H, 527)), 312 tensors for mn04. Loading is strict: every model tensor must be in the file and
every file tensor in the model, shapes equal, except the head layers the model replaces (``classifier.5`` for a class
count other than 527; both head layers for the plain linear head), which are reported as dropped.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lungsound.data.download import DownloadConfig, download_file, sha256_of
from lungsound.errors import LungsoundError

RELEASE_URL = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/"
AUDIOSET = ("audioset", "default")  # weights values meaning "the release checkpoint of this width"
DOWNLOAD = DownloadConfig(timeout=30.0, retries=2, backoff=1.0)  # an unreachable address fails within a minute


@dataclass(frozen=True)
class Release:
    """One release checkpoint: file name, size in bytes and SHA-256 (None where not known), its AudioSet mAP."""

    file: str
    size: int | None
    sha256: str | None
    mAP: float


RELEASES: dict[str, Release] = {
    "mn04": Release("mn04_as_mAP_432.pt", 4_066_513,
                    "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c", 0.432),
    "mn05": Release("mn05_as_mAP_443.pt", None, None, 0.443),
    "mn10": Release("mn10_as_mAP_471.pt", None, None, 0.471),
    "mn20": Release("mn20_as_mAP_478.pt", None, None, 0.478),
}


def weights_cache() -> Path:
    return Path(os.environ.get("LUNGSOUND_CACHE", Path.home() / ".cache" / "lungsound")) / "models" / "efficientat"


def resolve_weights(source: str, size: str) -> Path:
    """The checkpoint file ``source`` names for model size ``size`` (``"mn04"``...): the cached or downloaded release
    for ``"audioset"``, else a local file."""
    if source in AUDIOSET:
        return fetch_release(size)
    path = Path(source).expanduser()
    if not path.is_file():
        raise LungsoundError("no such EfficientAT weights file (model.pretrained takes a local .pt file, or 'audioset' "
                             f"for the release checkpoint {RELEASES[size].file})", path)
    known = {r.file: r for r in RELEASES.values()}.get(path.name)
    if known is not None and known.sha256 is not None and sha256_of(path) != known.sha256:
        raise LungsoundError(f"carries the release name {known.file} but not its SHA-256 {known.sha256}: a damaged "
                             "download (fetch it again) or another checkpoint (rename it)", path)
    return path


def fetch_release(size: str) -> Path:
    """The release checkpoint of ``size`` in the cache, downloaded and checked first when absent."""
    release = RELEASES[size]
    target = weights_cache() / release.file
    record = target.with_name(f"{target.name}.sha256")
    url = RELEASE_URL + release.file
    if target.is_file():
        digest = sha256_of(target)
        known = release.sha256 or (record.read_text().split()[0] if record.is_file() else None)
        if known is not None and digest != known.lower():
            raise LungsoundError(f"SHA-256 {digest} differs from the expected {known.lower()}; delete the file and run "
                                 "again", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        digest = download_file(url, target, sha256=release.sha256, size=release.size, config=DOWNLOAD)
    except LungsoundError as exc:
        raise LungsoundError(f"cannot download the EfficientAT {size} AudioSet weights ({exc.problem}); download "
                             f"{url} yourself and pass model.pretrained=PATH, or put the file at {target}") from None
    if release.sha256 is None:
        record.write_text(f"{digest}  {release.file}\n")
        print(f"lungsound: SHA-256 of {release.file} is {digest} (no checksum known to check it against; stored in "
              f"{record} and checked on every later load)", file=sys.stderr)
    return target


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A weights-only checkpoint file as a state dict of tensors (a one-line error naming the file otherwise)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, foreign, or a pickle that needs code
        raise LungsoundError(f"cannot read EfficientAT weights with weights_only loading: {exc}", path) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LungsoundError("EfficientAT weights file does not hold a state dict of tensors", path)
    return state


def load_state(model: nn.Module, state: dict[str, torch.Tensor], replaced: tuple[str, ...], source: Path,
               strict: bool = True) -> list[str]:
    """Load ``state`` (upstream layout) into ``model``; keys under the ``replaced`` prefixes (the new head layers)
    are dropped. Returns the dropped keys; a missing, unexpected or mismatched tensor is a one-line error naming
    ``source`` (a warning, loading only the fitting tensors, with ``strict=False``)."""
    target = model.state_dict()
    own = {k for k in target if not k.startswith(replaced)}
    dropped = sorted(k for k in state if k.startswith(replaced))
    kept = {k: v for k, v in state.items() if not k.startswith(replaced)}
    missing = sorted(own - set(kept))
    unexpected = sorted(set(kept) - own)
    mismatched = sorted(f"{k} (file {tuple(v.shape)}, model {tuple(target[k].shape)})"
                        for k, v in kept.items() if k in own and v.shape != target[k].shape)
    if missing or unexpected or mismatched:
        parts = [f"{what} {len(keys)}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched))
                 if keys]
        message = f"weights do not fit this EfficientAT ({'; '.join(parts)})"
        if strict:
            raise LungsoundError(message + "; is it a checkpoint of another width?", source)
        warnings.warn(f"{source}: {message}; loading only the fitting tensors (strict=False)", stacklevel=3)
    fitting = {k: v for k, v in kept.items() if k in own and v.shape == target[k].shape}
    model.load_state_dict(fitting, strict=False)
    return dropped
