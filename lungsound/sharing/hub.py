"""A model named by a local folder or by a Hugging Face hub id, resolved to a model folder on this machine.

`resolve_model(text)` decides, in this order and without ambiguity:

1. `hf://USER/NAME[@REVISION]`: always the hub;
2. an existing path (a folder, or a file inside one): always that local folder, even if it also looks like a hub id;
3. `USER/NAME[@REVISION]` (one slash; letters, digits, `-`, `_`, `.`; REVISION a branch, tag or commit): the hub;
4. anything else: a one-line error saying that there is no such folder.

A hub model is fetched with `huggingface_hub.snapshot_download` into the hub cache (`$HF_HUB_CACHE`, by default
`~/.cache/huggingface/hub`, laid out `models--USER--NAME/{blobs,refs,snapshots/<commit>}`). The first call downloads
the repository; later calls find it there, and with `HF_HUB_OFFLINE=1` (or no network) the cached snapshot of the
revision's ref is used without any request. A hub model that is not in the cache while the hub cannot be reached, a
repository that does not exist (or is private without a token), an unknown revision, and a repository that holds no
lungsound model (config.yaml with model.safetensors or model.onnx) are each a one-line `LungsoundError`.

The folder `snapshot_download` names is only used when it lies inside the cache, where huggingface_hub lays it out:
resolved (symbolic links and `..` followed), it must be a folder `snapshots/<commit>` of the repository's own cache
folder `models--USER--NAME`, and every file in it must resolve inside that repository folder (its blobs). A ref file
(`refs/main`) or a revision whose text walks out of the cache (`../../..`), or a snapshot file linking elsewhere, is
a one-line error: a model is never loaded from outside the cache.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lungsound.errors import LungsoundError, one_line

HUB_PREFIX = "hf://"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
HUB_ID = re.compile(rf"(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>[A-Za-z0-9][A-Za-z0-9._/-]*))?")


@dataclass(frozen=True)
class HubRef:
    """A model repository on the hub and, optionally, the branch, tag or commit to take."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_id(text: str) -> HubRef | None:
    """The `HubRef` of `USER/NAME[@REVISION]` (with or without `hf://`), or None when `text` is not shaped like one."""
    text = str(text).strip()
    text = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else text
    match = HUB_ID.fullmatch(text)
    if match is None or "--" in match["repo"] or ".." in match["repo"] or len(match["repo"]) > 96:
        return None
    return HubRef(match["repo"], match["revision"])


def check_repo_id(text: str) -> str:
    """`text` if it is a valid `USER/NAME` repository id (no revision), else a one-line error."""
    ref = parse_hub_id(text)
    if ref is None or ref.revision is not None or str(text).startswith(HUB_PREFIX):
        raise LungsoundError(f"not a Hugging Face repository id: {text!r} (expected USER/NAME: letters, digits, "
                             "'-', '_' and '.', at most 96 characters)")
    return ref.repo_id


def is_hub_source(text: str | os.PathLike) -> bool:
    """Whether `resolve_model` would take `text` from the hub (rules 1-3 of the module docstring)."""
    text = os.fspath(text)
    if text.startswith(HUB_PREFIX):
        return parse_hub_id(text) is not None
    return not Path(text).exists() and parse_hub_id(text) is not None


def resolve_model(source: str | os.PathLike) -> tuple[Path, str]:
    """(local model folder, how to name it) for a folder path or a hub id (see the module docstring)."""
    text = os.fspath(source)
    if text.startswith(HUB_PREFIX):
        ref = parse_hub_id(text)
        if ref is None:
            raise LungsoundError(f"not a Hugging Face hub id: {text!r} (expected hf://USER/NAME[@revision])")
        return download(ref), f"{HUB_PREFIX}{ref}"
    path = Path(text)
    if path.exists():
        return (path.parent if path.is_file() else path), text
    ref = parse_hub_id(text)
    if ref is None:
        raise LungsoundError("no such model folder (and not a Hugging Face hub id USER/NAME)", text)
    return download(ref), f"{HUB_PREFIX}{ref}"


def download(ref: HubRef) -> Path:
    """The snapshot folder of `ref` in the hub cache, downloaded on first use (see the module docstring)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    from lungsound import __version__

    where = f"hub model {ref}"
    try:
        folder = Path(snapshot_download(ref.repo_id, revision=ref.revision, library_name="lungsound",
                                        library_version=__version__))
    except RevisionNotFoundError:
        raise LungsoundError(f"{where}: the repository has no revision {ref.revision!r}") from None
    except RepositoryNotFoundError:  # also gated repositories and private ones without a token
        raise LungsoundError(f"{where}: no such model repository on the Hugging Face hub (a private one needs a "
                             "token: `hf auth login` or $HF_TOKEN)") from None
    except LocalEntryNotFoundError as exc:
        if type(exc).__name__ == "IncompleteSnapshotError":  # its subclass in recent huggingface_hub versions
            raise LungsoundError(f"{where}: its copy in the hub cache ({constants.HF_HUB_CACHE}) is incomplete and the "
                                 "hub cannot be reached: download it again with network access") from None
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
        raise LungsoundError(f"{where}: not in the hub cache ({constants.HF_HUB_CACHE}) and {why}: download it once "
                             "with network access (unset HF_HUB_OFFLINE), or pass a local model folder") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise LungsoundError(f"{where}: could not be downloaded: {one_line(exc)}") from None
    folder = _inside_cache(folder, ref, Path(constants.HF_HUB_CACHE))
    if not (folder / "config.yaml").is_file() or not any((folder / f).is_file()
                                                         for f in ("model.safetensors", "model.onnx")):
        raise LungsoundError(f"{where}: the repository holds no lungsound model (config.yaml with model.safetensors "
                             "or model.onnx; push one with `lungsound push`)", folder)
    return folder


def _inside_cache(folder: Path, ref: HubRef, cache: Path) -> Path:
    """`folder` resolved, when it is a snapshot of `ref`'s repository in `cache` whose files all lie inside that
    repository's cache folder; else a one-line error (see the module docstring)."""
    repo = (cache / f"models--{ref.repo_id.replace('/', '--')}").resolve()
    resolved = folder.resolve()
    where = f"hub model {ref}"
    if resolved.parent != repo / "snapshots":
        raise LungsoundError(f"{where}: the hub cache names {resolved} as its snapshot, which is not a snapshot folder "
                             f"of {repo} (a ref or revision walking out of the cache): refused", folder)
    for path in sorted(resolved.rglob("*")):
        target = path.resolve()
        if target != repo and repo not in target.parents:
            raise LungsoundError(f"{where}: {path.relative_to(resolved)} in its cached snapshot leads to {target}, "
                                 f"outside the cache folder {repo}: refused", folder)
    return resolved
