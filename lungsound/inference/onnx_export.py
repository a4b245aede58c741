"""`lungsound export`: a checkpoint's classifier as a self-contained ONNX model folder, checked before it is written.

The model is exported with `torch.onnx.export(dynamo=False)` (the TorchScript-based exporter; the torch.export-based
one needs `onnxscript`, which lungsound does not depend on), opset 17, one input `input` with a dynamic batch axis and
one output `logits`. The AST is exported with its SDPA attention as it runs (the exporter writes it as MatMul/Softmax);
the timm CNNs and the waveform speech models (wav2vec 2.0, HuBERT, WavLM, the per-cycle normalisation included) export
the same way. `int8` then quantises the weights of every MatMul/Gemm (the linear layers: all of a transformer's
projections and MLPs) to signed 8 bits with `onnxruntime.quantization.quantize_dynamic` (per-tensor scales;
activations quantised on the fly). Convolutions stay float: ONNX Runtime's dynamic ConvInteger is slower than its
float convolution on CPUs, so a CNN gains little from int8. Dynamic quantisation takes one activation scale per
tensor, i.e. over the whole batch, so an int8 model's output for a segment would depend on the other segments in its
batch: int8 models run one segment per call (the predictor does so), which makes every result reproducible.

The check, before anything is written: a batch of real cycles (`check_inputs`: annotated cycles of the recordings in
the given ICBHI-format folder, else the checkpoint's training data, else the built-in synthetic set, cut, padded and
featurised exactly as the predictor does) goes through PyTorch and through the exported model, in batches of the
predictor's size and once more one at a time (so the dynamic batch axis is exercised). fp32: the largest absolute
logit difference must be at most 1e-4. int8: the share of cycles given the same class as PyTorch fp32 must be at
least `min_agreement` (default 0.95: int8 noise flips a cycle whose two best logits are nearly tied, and with the
default 64 check cycles 0.95 allows 3 such flips, where the acceptance target for a trained AST-base is 99% on real
recordings); the agreement and the largest difference of a calibrated probability are printed and stored.
What was measured goes to `export.json` in the folder, with the SHA-256 of every weight file written (`weights_sha256`),
which every load verifies.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from lungsound.errors import LungsoundError, one_line
from lungsound.inference.onnx_folder import (DIGESTS, EXPORT_FILE, INPUT_NAME, ONNX_FILE, OUTPUT_NAME, OnnxModel,
                                             weight_digests)
from lungsound.models.registry import model_spec
from lungsound.storage import FolderKind, claim_output_dir, replace_dir, temp_dir_beside

# what `export_checkpoint` writes; --out must be new, empty or such a folder (lungsound.storage.claim_output_dir)
EXPORT_FOLDER = FolderKind("an ONNX export", (ONNX_FILE, EXPORT_FILE),
                           (ONNX_FILE, EXPORT_FILE, "config.yaml", "meta.json", "model.safetensors"))
FP32_TOLERANCE = 1e-4
MIN_AGREEMENT = 0.95
BUILTIN = "builtin"  # `data` naming the built-in synthetic set
CHECK_CYCLES = 64
OPSET = 17


def default_out(checkpoint: str | Path, int8: bool) -> Path:
    """`<checkpoint>-onnx` or `<checkpoint>-onnx-int8` beside the checkpoint folder."""
    folder = Path(checkpoint)
    return folder.parent / f"{folder.name}-onnx{'-int8' if int8 else ''}"


def check_inputs(cfg, data: str | Path | None = None, n: int = CHECK_CYCLES) -> tuple[torch.Tensor, str]:
    """Up to `n` real cycles as the model's input (n, T, 128) or (n, L), and where they came from (see the module
    docstring); cycles are taken evenly from the recordings with audio, in name order."""
    from lungsound.data.cycles import load_cycles

    root, recordings = cycle_recordings(cfg, data)
    per = max(1, math.ceil(n / len(recordings)))
    cycle_cfg = cycle_config(cfg)
    waves, used = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cycles running past the audio's end are cut, as in training
        for rec in recordings:
            if sum(len(w) for w in waves) >= n:
                break
            waves.append(load_cycles(rec.audio, rec.cycles[:per], cycle_cfg))
            used += 1
    batch = np.concatenate(waves)[:n]
    return as_model_inputs(cfg, batch), f"{len(batch)} annotated cycles of {used} recordings in {root}"


def cycle_recordings(cfg, data: str | Path | None = None) -> tuple[Path, list]:
    """(the folder, its recordings with audio and annotated cycles in name order): `data` (an ICBHI-format folder, or
    "builtin" for the built-in synthetic set), else the model's training data (`cfg.data.root` in its own format),
    else the built-in set; none is a one-line error naming the folder."""
    from lungsound.data.database import DEFAULT_FORMAT, open_database
    from lungsound.data.default import MARKER, default_data_dir, ensure_default_data

    fmt = cfg.data.format  # the model's training data format, except for the built-in (ICBHI-format) set
    if data is not None and str(data) != BUILTIN:
        root = Path(data)
    elif data is None and cfg.data.root is not None and Path(cfg.data.root).is_dir():
        root = Path(cfg.data.root)
    else:
        root = default_data_dir() if (default_data_dir() / MARKER).exists() else ensure_default_data(progress=False)
        fmt = DEFAULT_FORMAT
    db = open_database(root, split=None, format=fmt)
    recordings = sorted((r for r in db.recordings if r.audio is not None and r.cycles), key=lambda r: r.stem)
    if not recordings:
        raise LungsoundError("no recording with audio and annotated cycles to check the export on", root)
    return root, recordings


def cycle_config(cfg):
    """The model's cycles as training cut them: its own sample rate, the config's duration and padding."""
    from lungsound.data.cycles import CycleConfig

    return CycleConfig(sample_rate=model_spec(cfg.model.name).sample_rate, duration=cfg.data.duration,
                       pad=cfg.data.pad)


def as_model_inputs(cfg, waves: np.ndarray) -> torch.Tensor:
    """Cut cycles (n, L) as the model's input: the waveforms, or their fbanks (n, T, 128) as the predictor makes them."""
    from lungsound.features.fbank import FbankConfig, compute_features_batch

    spec = model_spec(cfg.model.name)  # the model's own input kind and sample rate
    return (torch.from_numpy(waves) if spec.input == "waveform"
            else compute_features_batch(waves, FbankConfig(sample_rate=spec.sample_rate)))


def refuse_metadata_model(name: str, checkpoint: Path) -> None:
    """A one-line refusal, before anything is written, for a model that reads each recording's metadata (BTS's
    `clap_bts`): its second input is the metadata sentence, tokenised in Python from the prompt table, and an exported
    graph of one `input` cannot take it (an export with a token input would need every runtime and the app to tokenise
    the sentence too)."""
    if model_spec(name).uses_metadata:
        raise LungsoundError(f"model {name!r} cannot be exported: besides the waveform it reads the recording's "
                             "metadata as a tokenised sentence, which an exported graph of one input cannot take; "
                             "run it with the torch runtime", checkpoint)


def export_checkpoint(checkpoint: str | Path, out: str | Path | None = None, *, int8: bool = False,
                      data: str | Path | None = None, n_check: int = CHECK_CYCLES,
                      min_agreement: float = MIN_AGREEMENT, torch_weights: bool = True, source: str | None = None,
                      log=print) -> dict:
    """Export, check and write the folder (see the module docstring); returns what `export.json` holds.

    `source` names the checkpoint in export.json (an MLflow URI when it was downloaded); `log` gets progress lines.
    """
    from lungsound.inference.batching import batch_size_for
    from lungsound.models.folder import CONFIG_FILE, META_FILE, MODEL_FILE, load_model, read_config

    checkpoint = Path(checkpoint)
    folder = checkpoint.parent if checkpoint.is_file() else checkpoint
    if (folder / CONFIG_FILE).is_file():  # else load_model says what is wrong with the folder
        refuse_metadata_model(read_config(folder).model.name, checkpoint)
    if not 0.0 <= min_agreement <= 1.0:
        raise LungsoundError(f"min_agreement must be between 0 and 1, got {min_agreement}")
    if n_check < 1:
        raise LungsoundError(f"the check needs at least one cycle, got n_check={n_check}")
    out = claim_output_dir(Path(out) if out is not None else default_out(checkpoint, int8), EXPORT_FOLDER, checkpoint)
    model, cfg, meta = load_model(checkpoint, device="cpu")
    temperature = float((meta.get("calibration") or {}).get("temperature", 1.0))
    t0 = time.perf_counter()
    inputs, described = check_inputs(cfg, data, n_check)
    batch = batch_size_for(cfg)
    with torch.inference_mode():
        expected = np.concatenate([model(inputs[i:i + batch]).float().numpy() for i in range(0, len(inputs), batch)])
    log(f"check data: {described}")
    tmp = temp_dir_beside(out)
    try:
        fp32_path = tmp / ("model.fp32.onnx" if int8 else ONNX_FILE)
        _export(model, inputs[:2], fp32_path, cfg.model.name)
        seconds_export = time.perf_counter() - t0
        check = {"inputs": int(len(inputs)), "data": described, "batch": batch, "tolerance": FP32_TOLERANCE}
        fp32 = _run(OnnxModel(fp32_path), inputs, batch)
        check_fp32(check, fp32, expected, "ONNX", checkpoint, log)
        got = fp32
        if int8:
            _quantize(fp32_path, tmp / ONNX_FILE)
            fp32_path.unlink()
            got = _run(OnnxModel(tmp / ONNX_FILE, precision="int8"), inputs, 1)
            check["int8_max_abs_logit_diff"] = float(np.abs(got - expected).max())
        same = got.argmax(axis=1) == expected.argmax(axis=1)
        check.update(argmax_agreement=float(same.mean()), disagreements=int((~same).sum()),
                     max_probability_diff=float(np.abs(softmax(got / temperature)
                                                       - softmax(expected / temperature)).max()),
                     min_agreement=min_agreement if int8 else None)
        if int8:
            log(f"int8 ONNX vs PyTorch fp32: same class for {100 * check['argmax_agreement']:.1f}% of the "
                f"{len(inputs)} cycles ({check['disagreements']} differ), largest calibrated-probability difference "
                f"{check['max_probability_diff']:.4f} (T = {temperature:.3g})")
            if check["argmax_agreement"] < min_agreement:
                share = 100 * check["argmax_agreement"]
                raise LungsoundError(f"the int8 model gives PyTorch's class for only {share:.1f}% of the check cycles, below the threshold {100 * min_agreement:g}%: use the "
                                     "fp32 export", checkpoint)
        for name in (CONFIG_FILE, META_FILE) + ((MODEL_FILE,) if torch_weights else ()):
            if (checkpoint / name).is_file():
                shutil.copy2(checkpoint / name, tmp / name)
        info = _export_info(checkpoint, source, cfg, tmp, int8, torch_weights, temperature, inputs, check)
        info["seconds"] = {"export": round(seconds_export, 2), "total": round(time.perf_counter() - t0, 2)}
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
        replace_dir(tmp, out, EXPORT_FOLDER, checkpoint)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info["folder"] = str(out)
    return info


def _export(model: torch.nn.Module, example: torch.Tensor, path: Path, name: str) -> None:
    """torch.onnx.export with a dynamic batch axis; any exporter failure is one line naming the model."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation note and the tracer's shape warnings
            torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    except Exception as exc:
        raise LungsoundError(f"model {name!r} cannot be exported to ONNX: {one_line(exc)}") from None


def _quantize(src: Path, dst: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the graph first: same result here (shapes are static)
    try:
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8,
                         per_channel=False, reduce_range=False)
    finally:
        root.setLevel(level)


def _run(session: OnnxModel, inputs: torch.Tensor, batch: int) -> np.ndarray:
    """Logits in batches of `batch` (of 1 for int8, as the predictor runs it); the batch axis must be dynamic: fp32
    gives the same logits for the first inputs one at a time, int8 the right shape for a batch of two."""
    batch = 1 if session.precision == "int8" else batch
    logits = np.concatenate([session.logits(inputs[i:i + batch]) for i in range(0, len(inputs), batch)])
    other = 2 if batch == 1 else 1
    again = np.concatenate([session.logits(inputs[i:i + other]) for i in range(0, min(2, len(inputs)), other)])
    if again.shape != logits[:len(again)].shape:
        raise LungsoundError(f"the exported model gives logits of shape {again.shape} for {len(again)} inputs")
    if session.precision == "fp32" and not np.allclose(again, logits[:len(again)], atol=FP32_TOLERANCE, rtol=0):
        worst = float(np.abs(again - logits[:len(again)]).max())
        raise LungsoundError(f"the exported model gives other logits for a batch of {other} than for a batch of "
                             f"{batch}: the batch axis is not dynamic ({worst:.3g})")
    return logits


def check_fp32(check: dict, got: np.ndarray, expected: np.ndarray, title: str, checkpoint: Path, log) -> None:
    """The fp32 check: the largest |logit difference| from PyTorch into `check` and the log, above `FP32_TOLERANCE`
    a one-line error naming the checkpoint."""
    check["fp32_max_abs_logit_diff"] = worst = float(np.abs(got - expected).max())
    log(f"fp32 {title} vs PyTorch: max |logit difference| {worst:.2e} (tolerance {FP32_TOLERANCE:g})")
    if not worst <= FP32_TOLERANCE:
        raise LungsoundError(f"the exported model does not match PyTorch: max |logit difference| {worst:.3g} > "
                             f"{FP32_TOLERANCE:g}", checkpoint)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _export_info(checkpoint: Path, source: str | None, cfg, folder: Path, int8: bool, torch_weights: bool,
                 temperature: float, inputs: torch.Tensor, check: dict) -> dict:
    import onnx
    import onnxruntime

    from lungsound import __version__

    digest = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    return {
        "format": "onnx", "precision": "int8" if int8 else "fp32",
        "quantization": ("dynamic: MatMul/Gemm weights as signed int8, per-tensor scales, activations quantised at "
                         "run time (onnxruntime.quantization.quantize_dynamic)") if int8 else None,
        "exporter": f"torch.onnx.export, TorchScript-based (dynamo=False), opset {OPSET}",
        "input": {"name": INPUT_NAME, "shape": ["batch", *inputs.shape[1:]], "kind": cfg.data.input},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", 4]},
        "model": cfg.model.name, "source": source or str(checkpoint.resolve()), "source_weights_sha256": digest,
        "torch_weights": torch_weights, "calibration_temperature": temperature,
        "sizes_bytes": {f.name: f.stat().st_size for f in sorted(folder.iterdir())
                        if f.suffix in (".onnx", ".safetensors")},
        DIGESTS: weight_digests(folder),  # checked on every load (lungsound.inference.onnx_folder.verify_weights)
        "check": check,
        "versions": {"lungsound": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
