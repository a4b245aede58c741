"""`lungsound validate-external`: score a trained model on the whole recordings of an external dataset.

    lungsound validate-external --dataset kauh --root DIR (--checkpoint FOLDER | --run-id ID) [--runtime NAME] [--json]

Prints recording-level sensitivity and specificity for crackles and for wheezes with Wilson 95% intervals, the
confusion table of findings, the same per group (KAUH: chest position, stethoscope filter mode) and every unmappable
recording with its reason; `--runtime` runs the model as `lungsound predict --runtime` does (e.g. `openvino` for
a folder from `lungsound export --format openvino`; torch by default), and the result names it (`runtime`); `--json` prints the result of `lungsound.external.validate.validate_external` as one object.
The figures are then kept (`lungsound.external.record`): for `--checkpoint` in the folder's meta.json and, when the
MLflow run that trained it is found, on that run; for `--run-id` on that run (the downloaded model folder is a copy).
Where they went is said in one line (stderr with `--json`). A failure to store them is a one-line error (exit 2) after
the results have been printed, so nothing measured is lost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lungsound.cli.model_source import add_model_options, add_runtime_option, model_reference, runtime_of
from lungsound.errors import LungsoundError, display_path, printable


def register(sub: argparse._SubParsersAction) -> None:
    from lungsound.external import ADAPTERS

    p = sub.add_parser("validate-external", help="recording-level sensitivity and specificity of a trained model on "
                                                 "an external dataset (e.g. KAUH)")
    p.add_argument("--dataset", required=True, choices=ADAPTERS.names(), help="which external dataset --root holds")
    p.add_argument("--root", type=Path, required=True, help="the dataset's folder (searched recursively for audio)")
    add_model_options(p)
    add_runtime_option(p)
    p.add_argument("--segmentation", choices=("auto", "breath", "windows"), default="auto",
                   help="auto: detected breathing cycles, else sliding windows (default)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="refuse longer recordings (default 120)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the tables")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from lungsound.external import get_adapter
    from lungsound.external.validate import validate_external
    from lungsound.inference import Predictor, open_source

    adapter = get_adapter(args.dataset)
    external = adapter.load(args.root)  # a missing or empty root fails before the model is loaded
    reference, kind = model_reference(args)
    with open_source(reference, kind) as source:
        predictor = Predictor.from_source(source, runtime=runtime_of(args, kind))
    result = validate_external(predictor, adapter, external, segmentation=args.segmentation,
                               max_seconds=args.max_seconds, progress=not args.quiet)
    result["runtime"] = predictor.runtime_label
    stored, error = _store(args, source.run_id, result)
    result["stored"] = stored
    if args.json:
        print(json.dumps(result, indent=2, default=float))
        print(f"lungsound: {stored['note']}", file=sys.stderr)
    else:
        print(format_report(result))
        print(stored["note"])
    if error is not None:
        raise error
    return 0


def _store(args: argparse.Namespace, run_id: str | None, result: dict) -> tuple[dict, LungsoundError | None]:
    """Keep the figures (meta.json and/or the MLflow run `run_id` the model was loaded from); returns where they went
    and any error, raised later."""
    from lungsound.external.record import ARTIFACT_DIR, evaluation_key, log_to_run, run_of_folder, save_to_meta

    stored = {"meta_json": None, "mlflow_run": None, "artifact": None}
    notes, error = [], None
    try:
        if args.checkpoint is not None:
            stored["meta_json"] = str(save_to_meta(args.checkpoint, result))
            notes.append(f"saved to {stored['meta_json']} (evaluations.{evaluation_key(result['dataset'])})")
            run_id, why = run_of_folder(args.checkpoint)
            if run_id is None:
                notes.append(f"not logged to MLflow: {why}")
        else:
            notes.append("meta.json not updated (the model was loaded from MLflow as a copy)")
        if run_id is not None:
            stored["artifact"] = log_to_run(run_id, result)
            stored["mlflow_run"] = run_id
            notes.append(f"logged to MLflow run {run_id} (metrics external_{result['dataset']}_*, artifact "
                         f"{ARTIFACT_DIR}/{result['dataset']}.json)")
    except LungsoundError as exc:
        error = exc
        notes.append("the rest was not stored (the error follows)")
    stored["note"] = "; ".join(notes)
    return stored, error


# ----------------------------------------------------------------------------------------------------------- report
def format_report(result: dict) -> str:
    """The result as plain-text tables (percentages; Wilson 95% intervals in brackets; counts in parentheses)."""
    unmappable = result["unmappable"]
    lines = [f"External validation on {result['title']}",
             f"  data: {display_path(result['root'])}",
             f"  model: {result['model']}  (segmentation: {result['segmentation']}"
             + (f", runtime: {result['runtime']})" if result.get("runtime") else ")"),
             f"  recordings found {result['recordings']}: scored {result['scored']}, unmappable {len(unmappable)}",
             "", f"Recording level ({result['interval']}):",
             f"  {'finding':<10} {'sensitivity':<30} {'specificity':<30}"]
    for finding, name in (("crackle", "crackles"), ("wheeze", "wheezes")):
        s = result[finding]
        lines.append(f"  {name:<10} {_rate(s, 'sensitivity'):<30} "
                     f"{_rate(s, 'specificity'):<30}")
    lines += ["", "Confusion (rows: finding in the label, columns: finding of the model):"]
    lines += _confusion_lines(result["confusion"])
    for kind, groups in result["groups"].items():
        lines += ["", f"By {kind.replace('_', ' ')}:",
                  f"  {'group':<22} {'n':>3}  {'crackles Se':<26} {'crackles Sp':<26} {'wheezes Se':<26} "
                  f"{'wheezes Sp':<26}"]
        for value, g in groups.items():
            c, w = g["crackle"], g["wheeze"]
            lines.append(f"  {value:<22} {g['scored']:>3}  {_rate(c, 'sensitivity'):<26} "
                         f"{_rate(c, 'specificity'):<26} "
                         f"{_rate(w, 'sensitivity'):<26} "
                         f"{_rate(w, 'specificity'):<26}")
    if unmappable:
        lines += ["", "Unmappable (not scored):"] + [f"  {display_path(Path(u['file']).name)}: {printable(u['reason'])}"
                                                         for u in unmappable]
    lines += ["", f"Labels are per recording, from the file names; agreement with them is indicative only "
                  f"(data_cards/{result['dataset']}.md)."]
    return "\n".join(line.rstrip() for line in lines)


def _rate(scores: dict, measure: str) -> str:
    """e.g. "66.7% [20.8-93.9] (2/3)": the rate, its interval and its counts (n/a when nobody is in the denominator)."""
    k, n = (scores["tp"], scores["positives"]) if measure == "sensitivity" else (scores["tn"], scores["negatives"])
    value, ci = scores[measure], scores["ci"][measure]
    if value is None:
        return "n/a (0/0)"
    return f"{100 * value:.1f}% [{100 * ci[0]:.1f}-{100 * ci[1]:.1f}] ({k}/{n})"


def _confusion_lines(confusion: dict) -> list[str]:
    labels = confusion["labels"]
    lines = [f"  {'':<10}" + "".join(f"{name:>10}" for name in labels)]
    for name, row in zip(labels, confusion["matrix"]):
        lines.append(f"  {name:<10}" + "".join(f"{count:>10}" for count in row))
    return lines
