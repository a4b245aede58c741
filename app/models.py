"""Which trained models the app can offer, and which one it opens with.

The model picker lists, in this order:

1. the folder or MLflow URI in `$LUNGSOUND_APP_MODEL`, when set (it is then the default);
2. the newest FINISHED run of the MLflow experiment "quickstart" that logged a `model` artifact (`make quickstart`
   writes it) - the default when `$LUNGSOUND_APP_MODEL` is not set;
3. every registered MLflow model, at its newest version;
4. checkpoint folders written by `lungsound train` under `./outputs/<experiment>/<run>/best` (newest first);
5. exported model folders written by `lungsound export` under `./outputs/<a>/<b>/<folder>` (e.g. `best-onnx-int8` beside
   a run's `best`, or `outputs/exported/<run id>/onnx`), newest first, each its own choice labelled with its precision
   (fp32 or int8); they run on ONNX Runtime. `$LUNGSOUND_APP_MODEL` may name an exported folder too.

A Hugging Face hub id (`USER/NAME[@revision]` or `hf://USER/NAME`, pushed by `lungsound push`) typed into the
sidebar's text box, or set in `$LUNGSOUND_APP_MODEL`, becomes a choice of its own (`hub_choice`): it is downloaded once
into the hub cache and read from there afterwards, offline too (`lungsound.sharing.hub`; an existing local path wins).

MLflow is consulted only where a store already exists (`$MLFLOW_TRACKING_URI`, or `./mlruns/mlflow.db` as
`lungsound.tracking` writes it), so opening the app never creates one. A store that cannot be read is reported as a
note, not an error: the app still works with the checkpoint folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_MODEL = "LUNGSOUND_APP_MODEL"
QUICKSTART_EXPERIMENT = "quickstart"
MODEL_ARTIFACT = "model"
MAX_CHECKPOINTS = 50
MLFLOW_SCHEMES = ("runs:/", "models:/")


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the picker: a checkpoint folder or an MLflow model URI."""

    label: str  # what the picker shows
    source: str  # a folder path, "runs:/<id>/model", "models:/<name>/<version>" or "hf://USER/NAME" (a hub id)
    origin: str  # "environment" | "quickstart" | "registered" | "checkpoint" | "exported" | "hub"
    runtime: str = "torch"  # "onnx" for an exported folder; "auto" for a hub id (decided by what it holds)

    @property
    def is_mlflow(self) -> bool:
        return self.source.startswith(MLFLOW_SCHEMES)

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
    return (folder / "model.safetensors").is_file() and (folder / "config.yaml").is_file()


def is_exported(folder: Path) -> bool:
    from lungsound.inference.onnx_runtime import is_exported as exported

    return exported(folder)


def exported_choice(folder: Path, label: str, origin: str, notes: list[str]) -> ModelChoice | None:
    """The choice of an exported folder, labelled with its precision; None (and a note) when export.json is broken."""
    from lungsound.errors import LungsoundError
    from lungsound.inference.onnx_runtime import read_export

    try:
        precision = read_export(folder)["precision"]
    except LungsoundError as exc:
        notes.append(f"{exc}; skipped.")
        return None
    return ModelChoice(label.replace("{precision}", precision), str(folder), origin, "onnx")


def hub_choice(text: str, origin: str = "hub") -> ModelChoice:
    """The choice of a Hugging Face hub id typed by the user; a one-line `LungsoundError` when it is not one. Nothing
    is downloaded until the model is loaded."""
    from lungsound.errors import LungsoundError, os_error_message
    from lungsound.sharing.hub import HUB_PREFIX, is_hub_source, parse_hub_id

    text = text.strip()
    try:
        hub = is_hub_source(text)
    except OSError as exc:  # e.g. a 5,000-character name: too long for the file system to even look it up
        raise LungsoundError(f"not a Hugging Face hub id nor a usable path: {os_error_message(exc)}") from None
    if not hub:
        raise LungsoundError(f"not a Hugging Face hub id: {text!r} (expected USER/NAME, USER/NAME@revision or "
                             "hf://USER/NAME)")
    ref = parse_hub_id(text)
    label = f"hub: {ref}" + (f" (from ${ENV_MODEL})" if origin == "environment" else "")
    return ModelChoice(label, f"{HUB_PREFIX}{ref}", origin, "auto")


def discover_models(outputs: str | Path = "outputs") -> Discovery:
    """Every model the app can load; the first entry is the default."""
    from lungsound.errors import os_error_message

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
            found.notes.append(f"could not read the MLflow store: {_one_line(exc)}")
    found.choices.extend(_checkpoint_folders(Path(outputs)))
    found.choices.extend(_exported_folders(Path(outputs), found.notes))
    return _unique(found)


def _environment_choice(env_source: str, found: Discovery) -> None:
    """The choice of `$LUNGSOUND_APP_MODEL` (when set), or a note saying why it is ignored."""
    if not env_source:
        return
    if is_exported(Path(env_source)):
        label = f"{_short(env_source)} (from ${ENV_MODEL}, ONNX " + "{precision})"
        choice = exported_choice(Path(env_source), label, "environment", found.notes)
        found.choices.extend([choice] if choice else [])
    elif env_source.startswith(MLFLOW_SCHEMES) or is_checkpoint(Path(env_source)):
        found.choices.append(ModelChoice(f"{_short(env_source)} (from ${ENV_MODEL})", env_source, "environment"))
    elif _is_hub_source(env_source):
        found.choices.append(hub_choice(env_source, "environment"))
    else:
        found.notes.append(f"${ENV_MODEL} = {env_source} is not a model folder (model.safetensors and "
                           "config.yaml are missing) nor an MLflow URI or Hugging Face hub id; ignored.")


def load_predictor(source: str, runtime: str = "torch"):
    """The `Predictor` of a picker entry (a folder, an MLflow URI or a hub id, run by `runtime`; "auto": by what the
    folder holds); errors are `LungsoundError`."""
    from lungsound.inference import Predictor

    if source.startswith(MLFLOW_SCHEMES):
        return Predictor.from_mlflow(source, runtime=runtime)
    if runtime == "auto" or _is_hub_source(source):
        return Predictor.from_pretrained(source, runtime=None if runtime == "auto" else runtime)
    return Predictor.from_checkpoint(source, runtime=runtime)


def _is_hub_source(source: str) -> bool:
    from lungsound.sharing.hub import is_hub_source

    return is_hub_source(source)


def _mlflow_client(notes: list[str]):
    """A client for the existing tracking store, or None when there is none (nothing is created)."""
    from lungsound.tracking import store_exists

    if not store_exists():
        return None
    try:
        from lungsound.tracking import client

        return client()
    except Exception as exc:
        notes.append(f"could not open the MLflow store: {_one_line(exc)}")
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
    """Exported folders `<outputs>/<a>/<b>/<folder>` (model.onnx, export.json, config.yaml), newest first."""
    if not outputs.is_dir():
        return []
    folders = [f.parent for f in outputs.glob("*/*/*/export.json") if is_exported(f.parent)]
    folders.sort(key=lambda f: (f / "model.onnx").stat().st_mtime, reverse=True)
    choices = [exported_choice(f, "ONNX {precision}: " + f"{f.parent.parent.name}/{f.parent.name}/{f.name}", "exported",
                               notes) for f in folders[:MAX_CHECKPOINTS]]
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
    if source.startswith(MLFLOW_SCHEMES):
        return source
    path = Path(source)
    return "/".join(path.parts[-2:]) if len(path.parts) > 2 else source


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
