#!/usr/bin/env bash
# GPU check (issue 11): run by hand on a machine with one CUDA GPU, from the repository root, after `make setup`.
#
#     bash benchmarks/gpu_check.sh            # about 5 minutes on a current data-centre GPU; under 8 minutes
#
# One line per check, PASS or FAIL, with its figures; the exit code is the number of failed checks.
#   1. AMP (fp16 autocast + GradScaler, the trainer's own) training of AST-base (random init, 8-s cycles, batch 8) on the
#      built-in data for a fixed number of steps: steps per second, peak GPU memory, the loss finite;
#   2. the same under bf16 (autocast dtype bf16, where the GPU supports it);
#   3. a 2-epoch run of Patch-Mix CL at full size (`lungsound train`, AST-base, built-in data);
#   4. the same for SG-SCL;
#   5. the predictor on CUDA: the Patch-Mix CL model on a recording, against the same model on the CPU.
# Runs and models go to a temporary folder (its own MLflow store); the built-in data and the feature cache are made in
# $LUNGSOUND_CACHE (~/.cache/lungsound) on first use. Nothing is downloaded (model.pretrained=null, HF_HUB_OFFLINE=1).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LS=${LS:-.venv/bin/lungsound}
STEPS=${STEPS:-60}
WORK=$(mktemp -d -t lungsound-gpu-check-XXXX)
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
FAILED=0
COMMON="data.root=null model.pretrained=null tracking.experiment=gpu-check tracking.output_dir=$WORK/outputs"

fail() { echo "FAIL $1"; FAILED=$((FAILED + 1)); }

$PY - <<'EOF' || { echo "FAIL cuda: no usable CUDA device"; exit 1; }
import torch
assert torch.cuda.is_available()
print(f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
EOF
$LS data stats >/dev/null 2>&1 || echo "note: lungsound data stats failed: the built-in data could not be made"

# 1-2: the trainer's own loop for STEPS steps (after 5 warm-up steps) under fp16 AMP and bf16.
cat >"$WORK/train_check.py" <<'EOF'
import math, sys, time
import torch
from lungsound.config import load_config
from lungsound.training.trainer import Trainer


def main(dtype: str, steps: int, common: list[str]) -> str:
    if dtype == "bf16":
        if not torch.cuda.is_bf16_supported():
            return "SKIP bf16 training: this GPU has no bf16"
        torch.set_autocast_dtype("cuda", torch.bfloat16)  # the trainer's autocast takes the default dtype
    cfg = load_config("experiments/icbhi_ast_ce.yaml", [*common, "train.epochs=2", "train.max_steps_per_epoch=5"])
    trainer = Trainer(cfg, progress=False)
    trainer.train_epoch(1)  # warm-up: kernels, allocator
    trainer.cfg.train.max_steps_per_epoch = steps
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    logs = trainer.train_epoch(2)
    torch.cuda.synchronize()
    rate, loss = steps / (time.perf_counter() - t0), logs["train_loss"]
    finite = math.isfinite(loss)
    return (f"{'PASS' if finite else 'FAIL'} {dtype} training AST-base, batch 8 x 8 s: {rate:.2f} steps/s over {steps} "
            f"steps, peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GB, mean loss {loss:.4f} "
            f"({'finite' if finite else 'NOT finite'})")


if __name__ == "__main__":  # worker processes of the data pipeline may import this file again
    print(main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split()))
EOF
for dtype in fp16 bf16; do
  line=$(timeout 300 $PY "$WORK/train_check.py" "$dtype" "$STEPS" "$COMMON" 2>"$WORK/train-$dtype.err" | tail -n 1)
  case "$line" in
    PASS*|SKIP*) echo "$line" ;;
    *) fail "$dtype training: ${line:-$(tail -n 1 "$WORK/train-$dtype.err")}" ;;
  esac
done

# 3-4: two epochs of each contrastive method at full size through the command line.
for exp in icbhi_patchmix_cl icbhi_sgscl; do
  start=$(date +%s)
  if timeout 420 $LS train -c "experiments/$exp.yaml" $COMMON train.epochs=2 tracking.run_name="$exp" --quiet \
      >"$WORK/$exp.out" 2>"$WORK/$exp.err"; then
    summary=$(grep -m1 "^test (selected epoch)" "$WORK/$exp.out" | head -c 160)
    echo "PASS $exp, 2 epochs at full size: $(( $(date +%s) - start )) s; ${summary:-$(tail -n 1 "$WORK/$exp.out")}"
  else
    fail "$exp, 2 epochs: $(tail -n 1 "$WORK/$exp.err")"
  fi
done

# 5: the predictor on CUDA against the CPU, on the Patch-Mix CL model just trained.
MODEL=$(find "$WORK/outputs" -path "*icbhi_patchmix_cl*/best" -type d | head -n 1)
if [ -z "$MODEL" ]; then
  fail "predictor on CUDA: no model (check 3 failed)"
else
  cat >"$WORK/predict_check.py" <<'EOF'
import sys, time
from pathlib import Path
import numpy as np
from lungsound.data.database import open_database
from lungsound.data.default import resolve_root
from lungsound.inference import Predictor


def main(model: str) -> str:
    shared = Path("../shared/data/icbhi")
    db = open_database(shared if shared.is_dir() else resolve_root(None), split=None)
    rec = next(r for r in sorted(db.recordings, key=lambda r: r.stem) if r.audio is not None and r.cycles)
    gpu, cpu = Predictor.from_checkpoint(model, device="cuda"), Predictor.from_checkpoint(model, device="cpu")
    gpu.predict(rec.audio, annotation=rec.annotation)  # warm-up
    t0 = time.perf_counter()
    a = gpu.predict(rec.audio, annotation=rec.annotation)
    seconds = time.perf_counter() - t0
    b = cpu.predict(rec.audio, annotation=rec.annotation)
    p = np.array([list(s.probabilities.values()) for s in a.segments])
    q = np.array([list(s.probabilities.values()) for s in b.segments])
    diff = float(np.abs(p - q).max())
    ok = next(gpu.model.parameters()).is_cuda and np.allclose(p.sum(1), 1, atol=1e-5) and diff < 1e-2
    return (f"{'PASS' if ok else 'FAIL'} predictor on CUDA: {rec.stem}, {len(p)} segments in {seconds:.2f} s "
            f"({len(p) / seconds:.1f} segments/s), largest probability difference to the CPU {diff:.1e} "
            "(limit 1e-2: TF32 convolutions)")


if __name__ == "__main__":
    print(main(sys.argv[1]))
EOF
  line=$(timeout 240 $PY "$WORK/predict_check.py" "$MODEL" 2>"$WORK/predict.err" | tail -n 1)
  case "$line" in PASS*) echo "$line" ;; *) fail "predictor on CUDA: ${line:-$(tail -n 1 "$WORK/predict.err")}" ;; esac
fi

echo "$FAILED check(s) failed; logs in $WORK"
exit "$FAILED"
