"""Which trained models the app can offer, and which one it opens with.

The model picker lists, in this order:

1. the folder or MLflow URI in `$LUNGSOUND_APP_MODEL`, when set (it is then the default);
2. the newest FINISHED run of the MLflow experiment "quickstart" that logged a `model` artifact (`make quickstart`
   writes it) - the default when `$LUNGSOUND_APP_MODEL` is not set;
3. every registered MLflow model, at its newest version;
4. checkpoint folders written by `lungsound train` under `./outputs/<experiment>/<run>/best` (newest first);
5. exported model folders written by `lungsound export` under `./outputs/<a>/<b>/<folder>` (e.g. `best-onnx-int8` beside
   a run's `best`, or `outputs/exported/<run id>/onnx`), newest first, each its own choice labelled with its format and
   precision (e.g. `ONNX int8`, `OpenVINO int8`, `OpenVINO bf16`); they run on the runtime they were exported for. `$LUNGSOUND_APP_MODEL` may name an
   exported folder too.

What a text names (a folder, an MLflow URI, a hub id) is read by `lungsound.inference.sources`, and which runtime runs
a folder by `lungsound.inference.runtimes.runtime_for`, as everywhere else. A Hugging Face hub id
(`USER/NAME[@revision]` or `hf://USER/NAME`, pushed by `lungsound push`) typed into the sidebar's text box, or set in
`$LUNGSOUND_APP_MODEL`, becomes a choice of its own (`hub_choice`): it is downloaded once into the hub cache and read
from there afterwards, offline too (an existing local path wins).

MLflow is consulted only where a store already exists (`$MLFLOW_TRACKING_URI`, or `./mlruns/mlflow.db` as
`lungsound.tracking` writes it), so opening the app never creates one. A store that cannot be read is reported as a
note, not an error: the app still works with the checkpoint folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lungsound.errors import LungsoundError, one_line, os_error_message
from lungsound.inference import DEFAULT_RUNTIME, Predictor, runtime_for
from lungsound.inference.sources import (FOLDER, HUB, HUB_PREFIX, MLFLOW, MODEL_ARTIFACT, parse_hub_id,
                                         reference_kind)

ENV_MODEL = "LUNGSOUND_APP_MODEL"
QUICKSTART_EXPERIMENT = "quickstart"
MAX_CHECKPOINTS = 50
AUTO = "auto"  # the runtime of a hub id's choice: decided by what the downloaded folder holds


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the picker: a checkpoint folder or an MLflow model URI."""

    label: str  # what the picker shows
    source: str  # a folder path, "runs:/<id>/model", "models:/<name>/<version>" or "hf://USER/NAME" (a hub id)
    origin: str  # "environment" | "quickstart" | "registered" | "checkpoint" | "exported" | "hub"
    runtime: str = DEFAULT_RUNTIME  # an exported folder's own runtime ("onnx"); "auto" for a hub id (by what it holds)

    @property
    def is_mlflow(self) -> bool:
        return reference_kind(self.source) == MLFLOW

    @property
    def is_hub(self) -> bool:
        return self.source.startswith("hf://")  # as `hub_choice` writes every hub source


@dataclass
class Discovery:
    """The picker's entries (default first) and notes on sources that could not be read."""

    choices: list[ModelChoice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def default(self) -> ModelChoice | None:
        return self.choices[0] if self.choices else None


def is_checkpoint(folder: Path) -> bool:
    return runtime_for(folder, DEFAULT_RUNTIME).holds(folder)


def is_exported(folder: Path) -> bool:
    return runtime_for(folder).exported


def exported_choice(folder: Path, label: str, origin: str, notes: list[str]) -> ModelChoice | None:
    """The choice of an exported folder, its label's "{format}" and "{precision}" filled in (e.g. "ONNX int8"); None
    (and a note) when the folder's record of its export is broken."""
    runtime = runtime_for(folder)
    try:
        precision = runtime.precision_of(folder)
    except LungsoundError as exc:
        notes.append(f"{exc}; skipped.")
        return None
    label = label.replace("{format}", runtime.title).replace("{precision}", precision)
    return ModelChoice(label, str(folder), origin, runtime.name)


def hub_choice(text: str, origin: str = "hub") -> ModelChoice:
    """The choice of a Hugging Face hub id typed by the user; a one-line `LungsoundError` when it is not one. Nothing
    is downloaded until the model is loaded."""
    text = text.strip()
    try:
        ref = parse_hub_id(text) if reference_kind(text) == HUB else None
    except OSError as exc:  # e.g. a 5,000-character name: too long for the file system to even look it up
        raise LungsoundError(f"not a Hugging Face hub id nor a usable path: {os_error_message(exc)}") from None
    if ref is None:
        raise LungsoundError(f"not a Hugging Face hub id: {text!r} (expected USER/NAME, USER/NAME@revision or "
                             "hf://USER/NAME)")
    label = f"hub: {ref}" + (f" (from ${ENV_MODEL})" if origin == "environment" else "")
    return ModelChoice(label, f"{HUB_PREFIX}{ref}", origin, AUTO)


def discover_models(outputs: str | Path = "outputs") -> Discovery:
    """Every model the app can load; the first entry is the default."""
    found = Discovery()
    env_source = os.environ.get(ENV_MODEL, "").strip()
    try:
        _environment_choice(env_source, found)
    except OSError as exc:  # a name too long to look up, a folder that cannot be read: a note, not a traceback
        found.notes.append(f"${ENV_MODEL}: {os_error_message(exc)}; ignored.")
    mlf = _mlflow_client(found.notes)
    if mlf is not None:
        try:
            found.choices.extend(_quickstart_runs(mlf))
            found.choices.extend(_registered_models(mlf))
        except Exception as exc:  # any MLflow failure (locked or old-schema store, server down) is only a note
            found.notes.append(f"could not read the MLflow store: {one_line(exc, with_type=True)}")
    found.choices.extend(_checkpoint_folders(Path(outputs)))
    found.choices.extend(_exported_folders(Path(outputs), found.notes))
    return _unique(found)


def _environment_choice(env_source: str, found: Discovery) -> None:
    """The choice of `$LUNGSOUND_APP_MODEL` (when set), or a note saying why it is ignored."""
    if not env_source:
        return
    kind = reference_kind(env_source)
    if kind == FOLDER and is_exported(Path(env_source)):
        label = f"{_short(env_source)} (from ${ENV_MODEL}, " + "{format} {precision})"
        choice = exported_choice(Path(env_source), label, "environment", found.notes)
        found.choices.extend([choice] if choice else [])
    elif kind == MLFLOW or (kind == FOLDER and is_checkpoint(Path(env_source))):
        found.choices.append(ModelChoice(f"{_short(env_source)} (from ${ENV_MODEL})", env_source, "environment"))
    elif kind == HUB and parse_hub_id(env_source) is not None:
        found.choices.append(hub_choice(env_source, "environment"))
    else:
        found.notes.append(f"${ENV_MODEL} = {env_source} is not a model folder (model.safetensors and "
                           "config.yaml are missing) nor an MLflow URI or Hugging Face hub id; ignored.")


def load_predictor(source: str, runtime: str = DEFAULT_RUNTIME):
    """The `Predictor` of a picker entry (a folder, an MLflow URI or a hub id, run by `runtime`; "auto": by what the
    folder holds); errors are `LungsoundError`."""
    return Predictor.from_pretrained(source, runtime=None if runtime == AUTO else runtime)


def _mlflow_client(notes: list[str]):
    """A client for the existing tracking store, or None when there is none (nothing is created)."""
    from lungsound.tracking import store_exists

    if not store_exists():
        return None
    try:
        from lungsound.tracking import client

        return client()
    except Exception as exc:
        notes.append(f"could not open the MLflow store: {one_line(exc, with_type=True)}")
        return None


def _quickstart_runs(mlf) -> list[ModelChoice]:
    """The newest finished quickstart run that has a model artifact (at most one entry)."""
    from lungsound.tracking import artifact_paths, find_experiment, finished_runs

    exp = find_experiment(mlf, QUICKSTART_EXPERIMENT)
    if exp is None:
        return []
    for run in finished_runs(mlf, [exp.experiment_id], newest_first=True, max_results=20):
        if MODEL_ARTIFACT in artifact_paths(mlf, run.info.run_id):
            name = run.info.run_name or run.info.run_id[:8]
            return [ModelChoice(f"quickstart model (run {name}, {run.info.run_id[:8]})",
                                f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}", "quickstart")]
    return []


def _registered_models(mlf) -> list[ModelChoice]:
    from lungsound.tracking import model_versions, registered_models

    choices = []
    for name in registered_models(mlf, max_results=100):
        versions = model_versions(mlf, name)
        if not versions:
            continue
        newest = max(versions, key=lambda v: int(v.version))
        choices.append(ModelChoice(f"registered: {name} v{newest.version}", f"models:/{name}/{newest.version}",
                                   "registered"))
    return choices


def _checkpoint_folders(outputs: Path) -> list[ModelChoice]:
    """`<outputs>/<experiment>/<run>/best` folders, newest first."""
    if not outputs.is_dir():
        return []
    folders = [f for f in outputs.glob("*/*/best") if is_checkpoint(f)]
    folders.sort(key=lambda f: (f / "model.safetensors").stat().st_mtime, reverse=True)
    return [ModelChoice(f"checkpoint: {f.parent.parent.name}/{f.parent.name}", str(f), "checkpoint")
            for f in folders[:MAX_CHECKPOINTS]]


def _exported_folders(outputs: Path, notes: list[str]) -> list[ModelChoice]:
    """Exported folders `<outputs>/<a>/<b>/<folder>` (export.json and the files of its runtime), newest first."""
    if not outputs.is_dir():
        return []
    folders = [f.parent for f in outputs.glob("*/*/*/export.json") if is_exported(f.parent)]
    folders.sort(key=lambda f: (f / runtime_for(f).files[0]).stat().st_mtime, reverse=True)  # its model file
    choices = [exported_choice(f, "{format} {precision}: " + f"{f.parent.parent.name}/{f.parent.name}/{f.name}",
                               "exported", notes) for f in folders[:MAX_CHECKPOINTS]]
    return [c for c in choices if c is not None]


def _unique(found: Discovery) -> Discovery:
    seen: set[str] = set()
    choices = []
    for choice in found.choices:
        key = choice.source if choice.is_mlflow or choice.is_hub else str(Path(choice.source).resolve())
        if key not in seen:
            seen.add(key)
            choices.append(choice)
    found.choices = choices
    return found


def _short(source: str) -> str:
    if reference_kind(source) == MLFLOW:
        return source
    path = Path(source)
    return "/".join(path.parts[-2:]) if len(path.parts) > 2 else source
