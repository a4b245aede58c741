"""Model references: whatever names a trained model, turned into a model folder on this machine plus what is known
about where it came from. The CLI (`predict`, `export`, `validate-external`, `push`, `evaluate`), the app and
`Predictor.from_pretrained` / `from_checkpoint` / `from_mlflow` all read references here, and only here.

A reference is read (`reference_kind`), in this order and without ambiguity:

1. `runs:/<run id>/<path>` or `models:/<name>/<version>` (`models:/<name>/latest`: its highest version;
   `models:/<name>@<alias>`): a model in the MLflow store of `lungsound.tracking` ($MLFLOW_TRACKING_URI);
2. `hf://USER/NAME[@REVISION]`: always the Hugging Face hub;
3. an existing path (a folder, or a file inside one): always that local folder, even if it also looks like a hub id;
4. `USER/NAME[@REVISION]` (one slash; letters, digits, `-`, `_`, `.`; REVISION a branch, tag or commit): the hub;
5. a bare MLflow run id (32 hexadecimal digits): the `model` artifact of that run;
6. anything else: a one-line error saying that there is no such model folder.

A caller that knows the kind says so (`kind`: `--checkpoint` is a folder, `--run-id` is MLflow, where any run id
MLflow accepts is taken); then only that kind is read.

`open_source(reference, kind)` (a context manager) gives a `Source`: the local folder, which kind of reference it was,
the name to show for it (the reference as given; `hf://USER/NAME[@REVISION]` for the hub), for an MLflow model its run
id and artifact path (`evaluations()`: the external validations logged to that run, which its downloaded meta.json
copy lacks), and for a hub model its repository, revision and the snapshot's commit. An MLflow model is downloaded
into a temporary folder that is removed when the block ends (`Source.temporary`); a folder and a hub snapshot stay.

Hub models are fetched with `huggingface_hub.snapshot_download` into the hub cache (`$HF_HUB_CACHE`, by default
`~/.cache/huggingface/hub`, laid out `models--USER--NAME/{blobs,refs,snapshots/<commit>}`). The first call downloads
the repository; later calls find it there, and with `HF_HUB_OFFLINE=1` (or no network) the cached snapshot of the
revision's ref is used without any request. A hub model that is not in the cache while the hub cannot be reached, a
repository that does not exist (or is private without a token), an unknown revision, and a repository that holds no
lungsound model (config.yaml with the files of a registered runtime) are each a one-line `LungsoundError`. The folder
`snapshot_download` names is only used when it lies inside the cache, where huggingface_hub lays it out: resolved
(symbolic links and `..` followed), it must be a folder `snapshots/<commit>` of the repository's own cache folder
`models--USER--NAME`, and every file in it must resolve inside that repository folder (its blobs). A ref file
(`refs/main`) or a revision whose text walks out of the cache (`../../..`), or a snapshot file linking elsewhere, is a
one-line error: a model is never loaded from outside the cache.

External validations (`lungsound validate-external`, `lungsound.external.record`) are kept in a model folder's
meta.json as `meta["evaluations"]["external:<dataset>"] = meta_entry(result)` and, on the model's MLflow run, as the
artifacts `external_validation/<dataset>.json`; `run_evaluations(run_id)` reads the latter back in the former's shape.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from lungsound import __version__
from lungsound.errors import LungsoundError, one_line
from lungsound.inference.runtimes import RUNTIMES
from lungsound.models.folder import CONFIG_FILE
from lungsound.tracking import artifact_paths, client, download_artifacts, model_version, tracking_uri

FOLDER, MLFLOW, HUB = "folder", "mlflow", "hub"
KINDS = (FOLDER, MLFLOW, HUB)
MLFLOW_SCHEMES = ("runs:/", "models:/")
HUB_PREFIX = "hf://"
MODEL_ARTIFACT = "model"
RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow's run ids (rule 5)
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
HUB_ID = re.compile(rf"(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>[A-Za-z0-9][A-Za-z0-9._/-]*))?")
ARTIFACT_DIR = "external_validation"  # on a run: one <dataset>.json per external validation
SCORE_KEYS = ("sensitivity", "specificity", "ci", "positives", "negatives", "tp", "fn", "tn", "fp")


@dataclass(frozen=True)
class HubRef:
    """A model repository on the hub and, optionally, the branch, tag or commit to take."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class Reference:
    """What a model reference names, read but not fetched: a local `path`, an MLflow `run_id` and `artifact`, or a
    `hub` repository."""

    text: str  # as given
    kind: str  # folder | mlflow | hub
    path: Path | None = None
    run_id: str | None = None
    artifact: str | None = None
    hub: HubRef | None = None

    @property
    def label(self) -> str:
        """How to name it: the text as given, `hf://USER/NAME[@REVISION]` for the hub."""
        return f"{HUB_PREFIX}{self.hub}" if self.kind == HUB else self.text


@dataclass(frozen=True)
class Source:
    """A model reference opened: the model folder on this machine and what is known about where it came from."""

    reference: Reference
    folder: Path
    temporary: bool = False  # a download removed when `open_source`'s block ends
    commit: str | None = None  # the hub snapshot's commit

    @property
    def kind(self) -> str:
        return self.reference.kind

    @property
    def label(self) -> str:
        return self.reference.label

    @property
    def run_id(self) -> str | None:
        return self.reference.run_id

    @property
    def hub(self) -> HubRef | None:
        return self.reference.hub

    @property
    def uri(self) -> str:
        """`runs:/<id>/<path>` for an MLflow model, else the label."""
        return f"runs:/{self.run_id}/{self.reference.artifact}" if self.kind == MLFLOW else self.label

    def evaluations(self) -> dict[str, dict]:
        """The external validations logged to the model's MLflow run ({} for a folder or a hub model)."""
        return run_evaluations(self.run_id) if self.run_id else {}


# ------------------------------------------------------------------------------------------------ reading references


def reference_kind(text: str | os.PathLike) -> str | None:
    """Which kind of reference `text` is by rules 1-5 of the module docstring (None: none). Reads nothing but whether
    the path exists."""
    text = os.fspath(text).strip()
    if text.startswith(MLFLOW_SCHEMES):
        return MLFLOW
    if text.startswith(HUB_PREFIX):
        return HUB
    if text and Path(text).exists():
        return FOLDER
    if parse_hub_id(text) is not None:
        return HUB
    return MLFLOW if RUN_ID.fullmatch(text) else None


def parse_reference(text: str | os.PathLike, kind: str | None = None) -> Reference:
    """The `Reference` of `text` (`kind` None: by `reference_kind`); a registered MLflow model is looked up in the
    store (its run). Nothing is downloaded. Every problem is a one-line `LungsoundError`."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    raw = os.fspath(text)
    return _read(raw, kind or reference_kind(raw))


def _read(raw: str, found: str | None) -> Reference:
    if found == FOLDER:
        path = Path(raw)
        if not path.exists():
            raise LungsoundError("no such model folder", raw)
        return Reference(raw, FOLDER, path=path.parent if path.is_file() else path)
    if found == MLFLOW:
        run_id, artifact = resolve_model_uri(raw)
        return Reference(raw, MLFLOW, run_id=run_id, artifact=artifact)
    if found == HUB:
        ref = parse_hub_id(raw)
        if ref is None:
            expected = "hf://USER/NAME[@revision]" if raw.startswith(HUB_PREFIX) else \
                "USER/NAME, USER/NAME@revision or hf://USER/NAME"
            raise LungsoundError(f"not a Hugging Face hub id: {raw.strip()!r} (expected {expected})")
        return Reference(raw, HUB, hub=ref)
    raise LungsoundError("no such model folder (and not a Hugging Face hub id USER/NAME, nor an MLflow run id, "
                         "runs:/<id>/model or models:/<name>/<version>)", raw)


@contextmanager
def open_source(reference: str | os.PathLike | Reference, kind: str | None = None) -> Iterator[Source]:
    """The model folder `reference` names, fetched when it is remote (see the module docstring)."""
    ref = reference if isinstance(reference, Reference) else parse_reference(reference, kind)
    if ref.kind == FOLDER:
        yield Source(ref, ref.path)
    elif ref.kind == HUB:
        folder = download(ref.hub)
        yield Source(ref, folder, commit=folder.name)
    else:
        with tempfile.TemporaryDirectory(prefix="lungsound-model-") as tmp:
            yield Source(ref, download_artifacts(ref.run_id, ref.artifact, tmp), temporary=True)


def resolve_model(source: str | os.PathLike) -> tuple[Path, str]:
    """(local model folder, how to name it) for a folder path or a hub id (rules 2-4 and 6 of the module docstring;
    a hub model is fetched into the cache)."""
    text = os.fspath(source)
    kind = reference_kind(text)
    ref = _read(text, kind if kind in (FOLDER, HUB) else None)
    return (ref.path, ref.label) if ref.kind == FOLDER else (download(ref.hub), ref.label)


# ---------------------------------------------------------------------------------------------------------- MLflow


def resolve_model_uri(uri: str) -> tuple[str, str]:
    """(run id, artifact path) of `runs:/<id>/<path>`, a bare run id, or a registered `models:/<name>/<version>`
    (or `/latest`, or `@<alias>`)."""
    uri = str(uri).strip()
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].strip("/").partition("/")
        if not run_id:
            raise LungsoundError(f"no run id in {uri!r}; expected runs:/<run id>/model")
        return run_id, path or MODEL_ARTIFACT
    if uri.startswith("models:/"):
        return _registered(uri)
    if not re.fullmatch(r"[0-9a-zA-Z_-]+", uri):
        raise LungsoundError(f"not an MLflow run id or model URI: {uri!r} (expected a run id, runs:/<id>/model or "
                             "models:/<name>/<version>)")
    return uri, MODEL_ARTIFACT


def _registered(uri: str) -> tuple[str, str]:
    ref = uri[len("models:/"):].strip("/")
    name, _, number = ref.rpartition("@") if "@" in ref else ref.rpartition("/")
    if not name or not number:
        raise LungsoundError(f"expected models:/<name>/<version>, models:/<name>/latest or models:/<name>@<alias>, "
                             f"got {uri!r}")
    mlf = client()
    try:
        version = model_version(mlf, name, alias=number) if "@" in ref else model_version(mlf, name, number)
    except LungsoundError:
        raise
    except Exception as exc:  # mlflow's own exception types
        raise LungsoundError(f"registered model {uri!r} not found in {tracking_uri()}: {one_line(exc)}") from None
    source = str(version.source or "")
    if source.startswith("runs:/"):
        return resolve_model_uri(source)
    if not version.run_id:
        raise LungsoundError(f"registered model {uri!r} has no source run to load it from (source {source!r})")
    return version.run_id, MODEL_ARTIFACT


def evaluation_key(dataset: str) -> str:
    return f"external:{dataset}"


def meta_entry(result: dict, date: str | None = None) -> dict:
    """The compact record of an external validation kept in meta.json (no per-recording rows)."""
    return {"dataset": result["dataset"], "title": result["title"],
            "date": date or datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "n": result["scored"], "recordings": result["recordings"], "scored": result["scored"],
            "unmappable": len(result["unmappable"]), "segmentation": result["segmentation"],
            "interval": result["interval"],
            **{finding: {k: result[finding][k] for k in SCORE_KEYS} for finding in ("crackle", "wheeze")},
            "confusion": result["confusion"]}


def run_evaluations(run_id: str) -> dict[str, dict]:
    """The `meta_entry` of every external validation logged to a run (artifacts `external_validation/*.json`), keyed as
    in meta.json: how a model loaded from MLflow, whose meta.json is a downloaded copy, still shows its figures."""
    mlf = client()
    try:
        names = [p for p in artifact_paths(mlf, run_id, ARTIFACT_DIR) if p.endswith(".json")]
    except Exception:  # no such run or artifact folder: nothing measured
        return {}
    out = {}
    with tempfile.TemporaryDirectory(prefix="lungsound-external-") as tmp:
        for name in names:
            try:
                result = json.loads(download_artifacts(run_id, name, tmp).read_text())
                out[evaluation_key(result["dataset"])] = meta_entry(result, date=result.get("date"))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # an unreadable record is not a figure to show
    return out


# ------------------------------------------------------------------------------------------------------------- hub


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
    """Whether `text` names a hub model (rules 2 and 4 of the module docstring, with a well-formed id)."""
    text = os.fspath(text)
    return reference_kind(text) == HUB and parse_hub_id(text) is not None


def download(ref: HubRef) -> Path:
    """The snapshot folder of `ref` in the hub cache, downloaded on first use (see the module docstring)."""
    from huggingface_hub import constants, snapshot_download  # the hub client: imported when a hub model is read
    from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

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
    if not (folder / CONFIG_FILE).is_file() or not any(cls.holds(folder) for _, cls in RUNTIMES.items()):
        weights = " or ".join(dict.fromkeys(cls.files[0] for _, cls in RUNTIMES.items()))
        raise LungsoundError(f"{where}: the repository holds no lungsound model ({CONFIG_FILE} with {weights}; push "
                             "one with `lungsound push`)", folder)
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
