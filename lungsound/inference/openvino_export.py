"""`lungsound export --format openvino`: a checkpoint's classifier as a self-contained OpenVINO folder
(`lungsound.inference.openvino_folder`), fp32, bf16, int8 or int8+bf16, checked before it is written.

Conversion: `openvino.convert_model` straight from the PyTorch module (its TorchScript trace, so the AST's SDPA
attention stays one ScaledDotProductAttention operation that the CPU plugin fuses), one input `input` whose batch axis
is dynamic, one output `logits`; saved with `compress_to_fp16=False` (float32 weights on disk). Every registered
family converts this way (the AST, the timm CNNs, the waveform speech models); one that does not is a one-line error
naming the model and the converter's first line.

int8 (`--int8`): NNCF post-training quantisation (`nncf.quantize`; Nagel et al. 2021) of the converted graph,
calibrated on `--calibration-cycles` (default 300) cycles of the model's own training data, drawn with a seed
(`lungsound.inference.openvino_calibration`). A transformer (`ModelSpec.transformer`: the AST and the speech models)
gets NNCF's transformer model type (the mixed preset: symmetric weights, asymmetric activations, SmoothQuant, and the
attention's matmuls quantised too); a CNN gets NNCF's defaults. The scales are static (fixed at export), so a segment's
result never depends on the other segments of its batch: an int8 folder takes batches of any size. That is checked on
four calibration cycles: with OpenVINO 2026.4's CPU plugin, SmoothQuant on the speech models' graphs (their pooled
head) gives the second and later segments of a batch other logits than alone, so such a model is quantised again
without SmoothQuant (export.json's `quantization.smooth_quant` says which was kept).

Precision (`--precision f32|bf16|auto`, default f32): the compute precision of the layers in float (all of them
without --int8); `auto` is bf16 on a CPU with native bf16 (AVX512-BF16 or AMX) and f32 elsewhere, and the export
says which and why.

The check, before anything is written: the fp32 graph (loaded back from the files written) must give PyTorch's logits
within 1e-4 on held-out real cycles, in the predictor's batches and again one at a time; a bf16 or int8 folder then
gives the share of those cycles with PyTorch fp32's class (failing below `--min-agreement`, default 0.95) and the
largest calibrated-probability difference; int8's batches must equal its one-at-a-time results (static scales).
What was measured goes to export.json with the CPU's instruction sets and the SHA-256 of every weight file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from lungsound.errors import LungsoundError, one_line
from lungsound.inference.batching import batch_size_for
from lungsound.inference.onnx_export import (CHECK_CYCLES, FP32_TOLERANCE, INPUT_NAME, MIN_AGREEMENT, OUTPUT_NAME,
                                             check_fp32, refuse_metadata_model, softmax)
from lungsound.inference.onnx_folder import DIGESTS, EXPORT_FILE, weight_digests
from lungsound.inference.openvino_calibration import CALIBRATION_CYCLES, SEED, draw_cycles
from lungsound.inference.openvino_folder import BIN_FILE, XML_FILE, OpenVinoModel, cpu_instructions, resolve_precision
from lungsound.models.folder import CONFIG_FILE, META_FILE, MODEL_FILE, load_model, read_config
from lungsound.models.registry import model_spec
from lungsound.storage import FolderKind, claim_output_dir, replace_dir, temp_dir_beside

# what `export_openvino` writes; --out must be new, empty or such a folder (lungsound.storage.claim_output_dir)
OPENVINO_FOLDER = FolderKind("an OpenVINO export", (XML_FILE, EXPORT_FILE),
                             (XML_FILE, BIN_FILE, EXPORT_FILE, CONFIG_FILE, META_FILE, MODEL_FILE))
FP32_XML = "model.fp32.xml"  # the float graph while an int8 one is made from it (removed before the folder is moved)


def default_out(checkpoint: str | Path, int8: bool, compute: str) -> Path:
    """`<checkpoint>-openvino[-int8][-bf16]` beside the checkpoint folder."""
    folder = Path(checkpoint)
    return folder.parent / f"{folder.name}-openvino{'-int8' if int8 else ''}{'-bf16' if compute == 'bf16' else ''}"


def export_openvino(checkpoint: str | Path, out: str | Path | None = None, *, int8: bool = False,
                    precision: str = "f32", calibration: str | Path | None = None,
                    calibration_cycles: int = CALIBRATION_CYCLES, seed: int = SEED, data: str | Path | None = None,
                    n_check: int = CHECK_CYCLES, min_agreement: float = MIN_AGREEMENT, torch_weights: bool = True,
                    source: str | None = None, log=print) -> dict:
    """Convert, quantise (int8), check and write the folder (see the module docstring); returns export.json's content.

    `calibration` (a folder or "builtin") calibrates int8, else `data`, else the checkpoint's training data; the check
    cycles are held out of the same draw, or drawn from `data` when both are given. `source` names the checkpoint in
    export.json (an MLflow URI when it was downloaded); `log` gets progress lines.
    """
    checkpoint = Path(checkpoint)
    if not 0.0 <= min_agreement <= 1.0:
        raise LungsoundError(f"min_agreement must be between 0 and 1, got {min_agreement}")
    if int8 and calibration_cycles < 1:
        raise LungsoundError(f"--calibration-cycles must be at least 1, got {calibration_cycles}")
    refuse_metadata_model(read_config(checkpoint).model.name, checkpoint)  # clap_bts: before anything is written
    compute, why = resolve_precision(precision)
    label = ("int8" if int8 else "fp32") if compute == "f32" else ("int8+bf16" if int8 else "bf16")
    out = claim_output_dir(Path(out) if out is not None else default_out(checkpoint, int8, compute), OPENVINO_FOLDER,
                           checkpoint)
    log(f"precision: {why}")
    model, cfg, meta = load_model(checkpoint, device="cpu")
    spec = model_spec(cfg.model.name)
    temperature = float((meta.get("calibration") or {}).get("temperature", 1.0))
    t0 = time.perf_counter()
    draw = draw_cycles(cfg, calibration if calibration is not None else data, calibration_cycles if int8 else 0,
                       n_check, seed)
    checked = draw if calibration is None or data is None else draw_cycles(cfg, data, 0, n_check, seed)
    check = checked.check
    log(f"check data: {draw.described}" if checked is draw else
        f"calibration: {draw.described}; check: {checked.described}")
    batch = batch_size_for(cfg)
    with torch.inference_mode():
        expected = np.concatenate([model(check[i:i + batch]).float().numpy() for i in range(0, len(check), batch)])
    tmp = temp_dir_beside(out)
    try:
        graph = _convert(model, check[:2], cfg.model.name)
        fp32_xml = tmp / (FP32_XML if int8 else XML_FILE)
        _save(graph, fp32_xml)
        seconds = {"convert": round(time.perf_counter() - t0, 2)}
        result = {"inputs": int(len(check)), "data": checked.described, "batch": batch, "tolerance": FP32_TOLERANCE}
        fp32 = _run(OpenVinoModel(fp32_xml, threads=None, precision="fp32"), check, batch)
        check_fp32(result, fp32, expected, "OpenVINO", checkpoint, log)
        quantization = None
        if int8:
            t1 = time.perf_counter()
            for smooth in ((True, False) if spec.transformer else (False,)):
                quantization = _quantize(graph, draw.calibration, spec.transformer, smooth, log)
                _save(quantization.pop("model"), tmp / XML_FILE)
                if _batch_invariant(OpenVinoModel(tmp / XML_FILE, precision="int8"), draw.calibration):
                    break
                if smooth:
                    log("int8: with SmoothQuant a segment's result depends on its batch here; quantising again "
                        "without it")
            else:
                raise LungsoundError("the int8 model gives a segment other logits alone than inside a batch: its "
                                     "result would depend on its neighbours; use the fp32 or bf16 export", checkpoint)
            quantization.update(calibration=draw.described, seed=seed)
            seconds["quantize"] = round(time.perf_counter() - t1, 2)
            for name in (FP32_XML, Path(FP32_XML).with_suffix(".bin").name):
                (tmp / name).unlink()
        if label != "fp32":
            got = _run(OpenVinoModel(tmp / XML_FILE, threads=None, precision=label), check, batch)
            _agreement(result, got, expected, temperature, min_agreement, label, checkpoint, log)
        for name in (CONFIG_FILE, META_FILE) + ((MODEL_FILE,) if torch_weights else ()):
            if (checkpoint / name).is_file():
                shutil.copy2(checkpoint / name, tmp / name)
        seconds["total"] = round(time.perf_counter() - t0, 2)
        info = _export_info(checkpoint, source, cfg, tmp, label, compute, why, quantization, torch_weights,
                            temperature, check, result, seconds)
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
        replace_dir(tmp, out, OPENVINO_FOLDER, checkpoint)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info["folder"] = str(out)
    return info


def _convert(model: torch.nn.Module, example: torch.Tensor, name: str):
    """The OpenVINO graph of `model` with a dynamic batch axis; any converter failure is one line naming the model."""
    import openvino as ov

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on Python control flow with fixed shapes
            graph = ov.convert_model(model.eval(), example_input=example,
                                     input=[ov.PartialShape([-1, *example.shape[1:]])])
    except Exception as exc:
        raise LungsoundError(f"model {name!r} cannot be converted to OpenVINO: {one_line(exc)}") from None
    graph.inputs[0].get_tensor().set_names({INPUT_NAME})
    graph.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    return graph


def _save(graph, path: Path) -> None:
    import openvino as ov

    ov.save_model(graph, str(path), compress_to_fp16=False)  # float32 weights: the fp32 check holds to 1e-4


def _quantize(graph, inputs: torch.Tensor, transformer: bool, smooth: bool, log) -> dict:
    """NNCF post-training quantisation of `graph` on `inputs`, one cycle per calibration step, with SmoothQuant
    (Xiao et al. 2023; part of the transformer preset) when `smooth`; NNCF's progress bars and notes are kept off the
    terminal (one line says what it does)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    model_type = nncf.ModelType.TRANSFORMER if transformer else None
    advanced = None if smooth or not transformer else AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1))  # -1: SmoothQuant off
    note = "" if smooth or not transformer else ", no SmoothQuant"
    log(f"int8: NNCF post-training quantisation on {len(inputs)} calibration cycles "
        f"({'transformer' if transformer else 'default'} preset{note})")
    dataset = nncf.Dataset([inputs[i:i + 1].numpy() for i in range(len(inputs))])
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            quantized = nncf.quantize(graph, dataset, model_type=model_type, subset_size=len(inputs),
                                      advanced_parameters=advanced)
        except Exception as exc:
            raise LungsoundError(f"NNCF cannot quantise this model: {one_line(exc)}") from None
    return {"model": quantized, "tool": f"nncf.quantize {nncf.__version__} (post-training, static scales)",
            "model_type": "transformer" if transformer else "default", "smooth_quant": smooth and transformer,
            "subset_size": len(inputs)}


def _batch_invariant(compiled: OpenVinoModel, inputs: torch.Tensor, n: int = 4) -> bool:
    """Whether the first `n` inputs get the same logits (within 1e-4) alone as in one batch."""
    x = inputs[:n]
    alone = np.concatenate([compiled.logits(x[i:i + 1]) for i in range(len(x))])
    return bool(np.abs(compiled.logits(x) - alone).max() <= FP32_TOLERANCE)


def _run(compiled: OpenVinoModel, inputs: torch.Tensor, batch: int) -> np.ndarray:
    """Logits in batches of `batch` and once more one at a time: fp32 and int8 (static scales) must give the same
    logits either way (within 1e-4), bf16 (other kernels per batch shape may round differently) the same shape."""
    logits = np.concatenate([compiled.logits(inputs[i:i + batch]) for i in range(0, len(inputs), batch)])
    alone = np.concatenate([compiled.logits(inputs[i:i + 1]) for i in range(min(len(inputs), batch + 1))])
    if alone.shape != logits[:len(alone)].shape:
        raise LungsoundError(f"the converted model gives logits of shape {alone.shape} for {len(alone)} inputs")
    worst = float(np.abs(alone - logits[:len(alone)]).max())
    if compiled.inference == "f32" and not worst <= FP32_TOLERANCE:
        raise LungsoundError(f"the {compiled.precision} model gives other logits for a segment alone than inside a "
                             f"batch of {batch} ({worst:.3g}): its result would depend on its neighbours")
    return logits


def _agreement(result: dict, got: np.ndarray, expected: np.ndarray, temperature: float, min_agreement: float,
               label: str, checkpoint: Path, log) -> None:
    """Argmax agreement with PyTorch fp32 and the largest calibrated-probability difference, into `result`; below
    `min_agreement` a one-line error."""
    same = got.argmax(axis=1) == expected.argmax(axis=1)
    probability = np.abs(softmax(got / temperature) - softmax(expected / temperature)).max()
    result.update(argmax_agreement=float(same.mean()), disagreements=int((~same).sum()), min_agreement=min_agreement,
                  max_abs_logit_diff=float(np.abs(got - expected).max()), max_probability_diff=float(probability))
    log(f"{label} OpenVINO vs PyTorch fp32: same class for {100 * result['argmax_agreement']:.1f}% of the "
        f"{len(got)} held-out cycles ({result['disagreements']} differ), largest calibrated-probability difference "
        f"{result['max_probability_diff']:.4f} (T = {temperature:.3g})")
    if result["argmax_agreement"] < min_agreement:
        share = 100 * result["argmax_agreement"]
        raise LungsoundError(f"the {label} model gives PyTorch's class for only {share:.1f}% of the check cycles, "
                             f"below the threshold {100 * min_agreement:g}%: use the fp32 export", checkpoint)


def _export_info(checkpoint: Path, source: str | None, cfg, folder: Path, label: str, compute: str, why: str,
                 quantization: dict | None, torch_weights: bool, temperature: float, inputs: torch.Tensor,
                 check: dict, seconds: dict) -> dict:
    import nncf
    import openvino

    from lungsound import __version__

    digest = hashlib.sha256((checkpoint / MODEL_FILE).read_bytes()).hexdigest()
    return {
        "format": "openvino", "precision": label, "inference_precision": compute, "precision_choice": why,
        "quantization": quantization,
        "converter": "openvino.convert_model from the PyTorch module (TorchScript trace), float32 weights",
        "input": {"name": INPUT_NAME, "shape": ["batch", *inputs.shape[1:]], "kind": cfg.data.input},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", 4]},
        "model": cfg.model.name, "source": source or str(checkpoint.resolve()), "source_weights_sha256": digest,
        "torch_weights": torch_weights, "calibration_temperature": temperature,
        "sizes_bytes": {f.name: f.stat().st_size for f in sorted(folder.iterdir())
                        if f.suffix in (".xml", ".bin", ".safetensors")},
        DIGESTS: weight_digests(folder),  # checked on every load (lungsound.inference.onnx_folder.verify_weights)
        "check": check, "cpu": cpu_instructions(), "seconds": seconds,
        "versions": {"lungsound": __version__, "torch": torch.__version__, "openvino": openvino.__version__,
                     "nncf": nncf.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
