"""The model card (`README.md`) of a model pushed to the Hugging Face hub, written from the model folder itself.

Everything on the card comes from the folder's `config.yaml` and `meta.json` (and `export.json` for an ONNX export),
plus what MLflow knows about the run (`lungsound.sharing.provenance`: the data fingerprint and, for one seed of a
multi-seed group, mean +- std of every finished seed's test scores with n). Nothing is typed by hand, so the card cannot
drift from the weights it describes. Sections, in order:

- YAML front matter as the hub reads it (`huggingface_hub.ModelCardData`): library_name lungsound, license, tags,
  metrics, pipeline_tag audio-classification and, for a model trained and tested on real data, a model-index with its
  test Sp, Se and Score;
- the research-use notice in the project's words (README.md: "Research use only. Nothing here is a medical device.");
- model (architecture, input, output, format and files), training (data set, split, fingerprint, method with its
  paper, protocol, selected epoch, seed, run), test scores (this model; the seed group when there is one), calibration
  (temperature, ECE before and after), external evaluations (`meta["evaluations"]`, the same table as the app's card,
  `lungsound.external.card`), intended use and limitations (the same words as the app's card:
  `lungsound.inference.card`), how to use it, license and the citations (`lungsound.sharing.references`).
"""

from __future__ import annotations

from pathlib import Path

from lungsound import __version__
from lungsound.config import ExperimentConfig
from lungsound.external.card import evaluations_markdown, split_text
from lungsound.inference.card import INTENDED_USE, input_words, model_limitations, trained_on_synthetic
from lungsound.inference.runtimes import runtime_for
from lungsound.models.folder import read_config, read_meta
from lungsound.models.registry import model_spec
from lungsound.sharing.provenance import SCORE_KEYS, Provenance
from lungsound.sharing.references import method_words, references_for

NOTICE = "**Research use only. Nothing here is a medical device.**"
DEFAULT_LICENSE = "apache-2.0"
SCORE_NAMES = {"sp": "Sp", "se": "Se", "score": "Score"}
METRIC_TYPES = {"sp": "specificity", "se": "sensitivity", "score": "icbhi_score"}  # the front matter's metric ids
SPLITS = {"official": "the official ICBHI 60/40 train/test split"}


def model_card(folder: str | Path, repo_id: str, *, provenance: Provenance | None = None,
               license: str = DEFAULT_LICENSE, files: list[str] | None = None) -> str:
    """The README.md text for the model folder `folder` pushed as `repo_id` (see the module docstring)."""
    folder = Path(folder)
    cfg, meta = read_config(folder), read_meta(folder)
    runtime = runtime_for(folder)  # the runtime that runs the folder: torch, or the one it was exported for
    export = {"runtime": runtime.name, "title": runtime.title, "engine": runtime.engine} if runtime.exported else None
    provenance = provenance or Provenance()
    synthetic = trained_on_synthetic(cfg)
    files = files if files is not None else sorted(f.name for f in folder.iterdir() if f.is_file())
    parts = [
        _front_matter(cfg, meta, repo_id, license, synthetic, export),
        f"# {repo_id.split('/')[-1]}\n",
        f"A lungsound respiratory-sound classifier: it labels each breathing cycle of a chest recording as normal, "
        f"crackle, wheeze or both: {_architecture(cfg.model.name)}, `{cfg.model.name}`, trained with "
        f"{method_words(cfg)}.\n",
        f"{NOTICE} {_intended_use()}\n",
        _model_section(cfg, meta, export, files, runtime.describe(folder)),
        _training_section(cfg, meta, provenance, synthetic),
        _scores_section(meta, provenance),
        _calibration_section(meta),
        _evaluations_section(meta),
        _use_section(synthetic, bool(meta.get("calibration"))),
        _how_to_section(repo_id, export),
        _license_section(license, synthetic),
        _citation_section(cfg, synthetic),
    ]
    parts.append(f"_Card written by lungsound {__version__} from this repository's config.yaml and meta.json._\n")
    return "\n".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------------------- sections


def _front_matter(cfg: ExperimentConfig, meta: dict, repo_id: str, license: str, synthetic: bool,
                  export: dict | None) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    tags = ["lungsound", "audio", "audio-classification", "respiratory-sound", "lung-sound", cfg.model.name,
            cfg.method.name, f"protocol-{meta.get('protocol', cfg.train.protocol)}",
            "synthetic-data" if synthetic else "icbhi-2017"] + ([export["runtime"]] if export else [])
    test = _test_scores(meta)
    results = []
    if test and not synthetic:
        results = [EvalResult(task_type="audio-classification",
                              task_name="Respiratory sound classification (4 classes)", dataset_type="icbhi-2017",
                              dataset_name="ICBHI 2017 Respiratory Sound Database", dataset_split="test",
                              metric_type=METRIC_TYPES[k], metric_name=name, metric_value=round(test[k], 2))
                   for k, name in SCORE_NAMES.items() if k in test]
    data = ModelCardData(library_name="lungsound", license=license, pipeline_tag="audio-classification",
                         tags=list(dict.fromkeys(tags)), metrics=list(METRIC_TYPES.values()),
                         model_name=repo_id.split("/")[-1], eval_results=results or None)
    return f"---\n{data.to_yaml()}\n---\n"


def _model_section(cfg: ExperimentConfig, meta: dict, export: dict | None, files: list[str], fmt: str) -> str:
    if export is not None:
        fmt += ("; the PyTorch weights are included for explanations" if "model.safetensors" in files else
                "; without PyTorch weights, so no explanations")
    rows = [("architecture", f"{_architecture(cfg.model.name)}, `{cfg.model.name}`"
             + (f" initialised from `{cfg.model.pretrained}`" if cfg.model.pretrained else "")),
            ("input", f"{input_words(model_spec(cfg.model.name))} of a {cfg.data.duration:g}-s segment "
                      f"({cfg.data.pad} padding)"),
            ("output", "4 classes: " + ", ".join(meta.get("classes", ["normal", "crackle", "wheeze", "both"]))
             + "; probabilities softmax(logits / T)"),
            ("format", fmt),
            ("files", ", ".join(f"`{f}`" for f in files))]
    return "## Model\n\n" + _table(rows)


def _training_section(cfg: ExperimentConfig, meta: dict, provenance: Provenance, synthetic: bool) -> str:
    if synthetic:
        data = "lungsound's built-in synthetic ICBHI-format set (generated sounds, not patients)"
    else:
        data = f"ICBHI 2017 Respiratory Sound Database (ICBHI-format folder `{Path(cfg.data.root).name}`)"
    if cfg.data.generated:
        data += f", plus the generated clips of `{Path(cfg.data.generated).name}` in the training split"
    fingerprint = (f"`{provenance.data_fingerprint}` (labels, cycles and recordings of every split)"
                   if provenance.data_fingerprint else "not recorded (no MLflow run found for this folder)")
    papers = [f"[{ref.key}]" for ref, _ in references_for(cfg, synthetic) if ref.key != "ICBHI"]
    protocol = meta.get("protocol", cfg.train.protocol)
    epoch = meta.get("selected_epoch")
    rows = [("data", data),
            ("split", SPLITS.get(cfg.data.split) or split_text(cfg.data.split)),
            ("data fingerprint", fingerprint),
            ("method", method_words(cfg) + (f", after {' '.join(papers)}" if papers else "")),
            ("protocol", _protocol_words(protocol, cfg)),
            ("selected epoch", (f"{epoch} of {cfg.train.epochs}" if epoch is not None else "not recorded")
             + (" (no epoch met the selection rule: the first epoch was kept)" if meta.get("selection_fallback")
                else "")),
            ("seed", str(meta.get("seed", cfg.train.seed))),
            ("experiment", f"`{meta.get('experiment', cfg.name)}`"
             + (f": {cfg.description}" if cfg.description else ""))]
    if provenance.run_id:
        rows.append(("MLflow run", f"`{provenance.run_id}`"
                     + (f" (experiment `{provenance.experiment}`)" if provenance.experiment else "")))
    return "## Training\n\n" + _table(rows)


def _scores_section(meta: dict, provenance: Provenance) -> str:
    test = _test_scores(meta)
    metrics = meta.get("metrics") or {}
    if not test:
        return "## Test scores\n\nNo test scores are recorded in meta.json.\n"
    lines = ["## Test scores\n",
             "ICBHI 4-class metrics on the test split, in %: Sp is the recall of normal cycles, Se the share of "
             "abnormal cycles given their exact abnormal class, Score their mean.\n",
             "| | Sp | Se | Score |", "|---|---|---|---|",
             f"| this model (seed {meta.get('seed', '?')}) | "
             + " | ".join(_num(test.get(k)) for k in SCORE_KEYS) + " |"]
    group = provenance.group
    if group is not None and group.n > 0:
        stats = group.summary()
        planned = f" of {len(group.seeds_planned)} planned" if group.seeds_planned else ""
        lines.append(f"| mean ± std over n = {group.n} seeds{planned} | "
                     + " | ".join(f"{stats[k][0]:.2f} ± {stats[k][1]:.2f}" if k in stats else "-" for k in SCORE_KEYS)
                     + " |")
        for seed, scores in group.scores.items():
            lines.append(f"| seed {seed} | " + " | ".join(_num(scores.get(k)) for k in SCORE_KEYS) + " |")
    lines.append("")
    extra = []
    if "test_score_2class" in metrics:
        extra.append(f"two-class (normal vs abnormal) Score {_num(metrics['test_score_2class'])}, "
                     f"Se {_num(metrics.get('test_se_2class'))}")
    if "val_score" in metrics:
        extra.append(f"validation Score {_num(metrics['val_score'])} (the split the epoch was selected on)")
    accs = [f"{c} {_num(metrics[f'test_acc_{c}'])}" for c in ("normal", "crackle", "wheeze", "both")
            if f"test_acc_{c}" in metrics]
    if accs:
        extra.append("per-class test accuracy: " + ", ".join(accs))
    if extra:
        lines.append("Also: " + "; ".join(extra) + ".\n")
    if group is None:
        lines.append("The scores are one training run's (one seed); rerun with `lungsound train --seeds 1-5` for "
                     "mean ± std over seeds.\n")
    return "\n".join(lines)


def _calibration_section(meta: dict) -> str:
    cal = meta.get("calibration") or {}
    if "temperature" not in cal:
        return ("## Calibration\n\nNot calibrated (temperature T = 1): treat the probabilities as scores, not "
                "frequencies.\n")
    text = (f"Temperature scaling: T = {float(cal['temperature']):.3f}, fitted by maximum likelihood on the "
            f"{cal.get('n', '?')} validation cycles of the selected epoch; probabilities are softmax(logits / T).")
    if "ece_before" in cal and "ece_after" in cal:
        text += (f" Expected calibration error (15 bins) on those cycles: {100 * float(cal['ece_before']):.2f}% "
                 f"before, {100 * float(cal['ece_after']):.2f}% after.")
    return f"## Calibration\n\n{text}\n"


def _evaluations_section(meta: dict) -> str:
    table = evaluations_markdown(meta.get("evaluations"))
    return f"## External evaluations\n\n{table}\n" if table else ""


def _use_section(synthetic: bool, calibrated: bool) -> str:
    limitations = model_limitations(synthetic, calibrated)
    return ("## Intended use\n\n" + _intended_use() + " Out of scope: diagnosis, screening, triage, monitoring or any "
            "other clinical decision about a person.\n\n## Limitations\n\n" + f"{NOTICE}\n\n"
            + "\n".join(f"- {line}" for line in limitations) + "\n")


def _how_to_section(repo_id: str, export: dict | None) -> str:
    runtime = (f" It is an {export['title']} export: `from_pretrained` runs it with {export['engine']}." if export
               else "")
    return ("## How to use\n\nWith lungsound installed (the hub copy is downloaded once into the Hugging Face cache "
            "and read from there afterwards, offline too):\n\n"
            "```python\nfrom lungsound.inference import Predictor\n\n"
            f"predictor = Predictor.from_pretrained(\"{repo_id}\")\n"
            "prediction = predictor.predict(\"recording.wav\")\nprint(prediction.summary[\"text\"])\n```\n\n"
            f"```bash\nlungsound predict --model {repo_id} recording.wav\n```\n\n"
            f"The app's model picker takes the same id (its hub id box).{runtime}\n")


def _license_section(license: str, synthetic: bool) -> str:
    data = ("The training data was lungsound's built-in synthetic set." if synthetic else
            "The training data keeps its own terms: the ICBHI 2017 database is freely available for research; cite "
            "its paper (below) when you use this model.")
    return f"## License\n\nThis model: {license}. {data}\n"


def _citation_section(cfg: ExperimentConfig, synthetic: bool) -> str:
    refs = references_for(cfg, synthetic)
    if not refs:
        return ""
    lines = ["## Citation\n", "If you use this model, cite:\n"]
    lines += [f"- [{ref.key}] {ref.text}. {ref.url} (for {why})" for ref, why in refs]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------- helpers


def _intended_use() -> str:
    return INTENDED_USE


def _architecture(name: str) -> str:
    """The card words of the model's registration (`ModelSpec.architecture`); an unknown model is an error."""
    return model_spec(name).architecture


def _protocol_words(protocol: str, cfg: ExperimentConfig) -> str:
    if protocol == "clean":
        return (f"clean: the epoch was selected on a validation split of held-out training patients (about "
                f"{100 * cfg.data.val_fraction:.0f}% of the training cycles) and the test split is reported at that "
                "epoch")
    return (f"paper: no validation split; the reported epoch is the one with the best test Score (with Se > "
            f"{cfg.train.min_se:g}), as the papers did; the test scores are optimistic by construction")


def _test_scores(meta: dict) -> dict[str, float]:
    metrics = meta.get("metrics") or {}
    return {k: float(metrics[f"test_{k}"]) for k in SCORE_KEYS if f"test_{k}" in metrics}


def _table(rows: list[tuple[str, str]]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v.replace('|', '/')} |" for k, v in rows) + "\n"


def _num(value) -> str:
    return "-" if value is None else f"{float(value):.2f}"
