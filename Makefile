# lungsound: `make quickstart` then `make test` on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LS     := $(VENV)/bin/lungsound
STAMP  := $(VENV)/.installed
DATA   ?= data/ICBHI_final_database
SEEDS  ?= 1-5

export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg

.DEFAULT_GOAL := help
.PHONY: help setup test test-all quickstart data-stats clean-cache

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[dev]'
	$(PY) -c "import torch, torchaudio; print('torch', torch.__version__, 'torchaudio', torchaudio.__version__)"
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install lungsound (editable) with the test tools

test: setup ## fast test suite (a few minutes on 2 cores)
	$(PY) -m pytest -q

test-all: setup ## every test, the slow ones too
	$(PY) -m pytest -q -m "slow or not slow"

quickstart: setup ## train CE and Patch-Mix CL tiny ASTs on the built-in synthetic data (CPU, a few minutes) and compare
	$(LS) data stats
	$(LS) train -c experiments/quickstart.yaml --quiet
	$(LS) train -c experiments/quickstart_patchmix_cl.yaml --quiet
	$(LS) compare --experiment quickstart --out outputs/compare/quickstart
	@echo
	@echo "Runs are in the MLflow store mlruns/mlflow.db. Browse them with:"
	@echo "  $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db"
	@echo "then open http://127.0.0.1:5000 and click 'Model training' at the top left (once; the browser remembers it):"
	@echo "MLflow 3.17's UI starts in its GenAI view, where the runs do not show."
	@echo "Try the clinician demo (research use only) on the newest quickstart model with:"
	@echo "  make app"

data-stats: setup ## counts of the ICBHI database in DATA
	$(LS) data stats --root $(DATA)

clean-cache: ## remove cached cycles/features (~/.cache/lungsound/features)
	rm -rf $${LUNGSOUND_CACHE:-$$HOME/.cache/lungsound}/features

# --- ICBHI benchmarks (one GPU recommended): DATA=<ICBHI folder> SEEDS=1-5 ---------------------------------------------
# The benchmarks train through `lungsound sweep` (one MLflow parent per experiment file or grid cell, a child per seed;
# groups that finished before are kept). BACKEND=local trains the runs one after another; BACKEND=ray runs each as a Ray
# task (a local Ray on this machine's cores, or the cluster at RAY_ADDRESS: docs/sweeps.md) with GPUS_PER_RUN GPUs
# (ICBHI targets; the built-in ones use none) and CPUS_PER_RUN CPUs.
BACKEND      ?= local
GPUS_PER_RUN ?= 1
CPUS_PER_RUN ?= 1
SWEEP     = $(LS) sweep --backend $(BACKEND) $(if $(filter ray,$(BACKEND)),--cpus-per-run $(CPUS_PER_RUN) --gpus-per-run $(GPUS_PER_RUN))
SWEEP_CPU = $(LS) sweep --backend $(BACKEND) $(if $(filter ray,$(BACKEND)),--cpus-per-run $(CPUS_PER_RUN))
.PHONY: icbhi-ast-ce icbhi-ast-sam icbhi-patchmix-ce icbhi-patchmix-cl icbhi-sgscl icbhi-dat icbhi-repaugment icbhi-repaug-ver2 \
	icbhi-aft compare check-data check-domain download

check-data:
	@test -d "$(DATA)" || { echo "ICBHI data not found at '$(DATA)'."; \
	  echo "Get it with:  make download   (about 2 GB, into data/ICBHI_final_database)"; \
	  echo "or point DATA=... at an existing copy (official archive or Kaggle layout)."; exit 2; }

.PHONY: icbhi-bts
icbhi-bts: check-data setup ## BTS (CLAP with the metadata sentence) [BTS] and its audio-only CLAP baseline, both protocols
	$(SWEEP) -c experiments/icbhi_bts.yaml -c experiments/icbhi_bts_clean.yaml -c experiments/icbhi_clap_audio.yaml \
	  -c experiments/icbhi_clap_audio_clean.yaml data.root=$(DATA) --seeds $(SEEDS) --published --out outputs/compare/icbhi

icbhi-ast-ce: check-data setup ## AST fine-tuning baseline, both protocols, then the comparison table
	$(SWEEP) -c experiments/icbhi_ast_ce.yaml -c experiments/icbhi_ast_ce_clean.yaml data.root=$(DATA) --seeds $(SEEDS) \
	  --published --out outputs/compare/icbhi

icbhi-ast-sam: check-data setup ## AST + sharpness-aware minimisation (Isik et al. 2025), both protocols; its published figure is two-class
	$(SWEEP) -c experiments/icbhi_ast_sam.yaml -c experiments/icbhi_ast_sam_clean.yaml data.root=$(DATA) --seeds $(SEEDS) \
	  --published --out outputs/compare/icbhi

icbhi-patchmix-ce: check-data setup ## Patch-Mix with the mixed CE loss [PMCL], both protocols
	$(SWEEP) -c experiments/icbhi_patchmix_ce.yaml -c experiments/icbhi_patchmix_ce_clean.yaml data.root=$(DATA) --seeds $(SEEDS) \
	  --published --out outputs/compare/icbhi

icbhi-patchmix-cl: check-data setup ## Patch-Mix contrastive learning [PMCL], both protocols
	$(SWEEP) -c experiments/icbhi_patchmix_cl.yaml -c experiments/icbhi_patchmix_cl_clean.yaml data.root=$(DATA) --seeds $(SEEDS) \
	  --published --out outputs/compare/icbhi

# SG-SCL and DAT take DOMAIN=device (the published rows, default) | age | sex | location: the metadata domain whose values
# are SG-SCL's positives or DAT's adversary (the reference trains all four; definitions follow each file's protocol).
DOMAINS    := device age sex location
DOMAIN     ?= device
SGSCL_FILE  = icbhi_sgscl$(if $(filter device,$(DOMAIN)),,_$(DOMAIN))

check-domain:
	@case " $(DOMAINS) " in *" $(DOMAIN) "*) ;; *) echo "DOMAIN must be one of: $(DOMAINS) (got '$(DOMAIN)')"; exit 2;; esac

icbhi-sgscl: check-domain check-data setup ## stethoscope-guided SupCon [SGSCL], both protocols; DOMAIN=device|age|sex|location
	$(SWEEP) -c experiments/$(SGSCL_FILE).yaml -c experiments/$(SGSCL_FILE)_clean.yaml data.root=$(DATA) --seeds $(SEEDS) \
	  --published --out outputs/compare/icbhi

icbhi-dat: check-domain check-data setup ## domain-adversarial baseline of [SGSCL], both protocols; DOMAIN=device|age|sex|location
	$(SWEEP) -c experiments/icbhi_dat_$(DOMAIN).yaml -c experiments/icbhi_dat_$(DOMAIN)_clean.yaml data.root=$(DATA) --seeds $(SEEDS) \
	  --published --out outputs/compare/icbhi

# The RepAugment grid: the AST, the base and large speech models of the authors' code, and WavLM base+ (an extension of
# ours). REPAUG=... picks backbones (file stems); the large ones need about 10 GiB of GPU memory each (see their files).
# WEIGHTING=both adds the class-weighted CE cells (the paper does not state weighting; the authors' code leaves it off).
REPAUG_BACKBONES := icbhi_ast_repaugment icbhi_repaug_wav2vec2 icbhi_repaug_hubert icbhi_repaug_wav2vec2_large \
	icbhi_repaug_hubert_large icbhi_repaug_xls_r_300m icbhi_repaug_wavlm
REPAUG    ?= $(REPAUG_BACKBONES)
WEIGHTING ?= unweighted
, := ,
REPAUG_WEIGHTING = $(if $(filter both,$(WEIGHTING)),--grid method.class_weighted=false$(,)true)

icbhi-repaugment: check-data setup ## RepAugment grid [REPAUG]: AST + 6 speech backbones x {none, SpecAugment, Rep-Mask, Rep-Gen, RepAugment}, both protocols
	$(SWEEP) $(foreach exp,$(REPAUG),-c experiments/$(exp).yaml -c experiments/$(exp)_clean.yaml) --cells all \
	  $(REPAUG_WEIGHTING) data.root=$(DATA) tracking.experiment=icbhi-repaugment --seeds $(SEEDS) --quiet
	$(LS) grid --table-only --experiment icbhi-repaugment --out outputs/compare/icbhi-repaugment

icbhi-repaug-ver2: check-data setup ## [REPAUG]'s second Rep-Gen variant (all classes oversampled, noise on all rows) on the AST, both protocols
	$(SWEEP) -c experiments/icbhi_repaug_ver2.yaml -c experiments/icbhi_repaug_ver2_clean.yaml data.root=$(DATA) \
	  tracking.experiment=icbhi-repaugment --seeds $(SEEDS) --quiet
	$(LS) grid --table-only --experiment icbhi-repaugment --out outputs/compare/icbhi-repaugment

# [AFT]: a vocoder per protocol (the clean one never sees the validation patients), Mixed-500 and Mixed-2k from each,
# then the five rows. VOCODER=DIR (paper) and VOCODER_CLEAN=DIR reuse trained or imported vocoders.
AFT_ROWS := icbhi_aft_ce_real icbhi_aft_ce_mixed500 icbhi_aft_ce_mixed2k icbhi_aft_mixed500 icbhi_aft_mixed2k
GEN := outputs/generated

icbhi-aft: check-data setup ## [AFT] vocoder, Mixed-500/2k, CE and AFT rows, both protocols, vs published (GPU: days)
	set -e; for protocol in paper clean; do \
	  suffix=$$( [ $$protocol = clean ] && echo _clean || true ); \
	  voc=$$( [ $$protocol = clean ] && echo "$(VOCODER_CLEAN)" || echo "$(VOCODER)" ); \
	  if [ -z "$$voc" ]; then voc=$(GEN)/icbhi-vocoder$$suffix; \
	    [ -f $$voc/model.safetensors ] || $(LS) generate train -c experiments/vocoder_diffwave.yaml data.root=$(DATA) \
	      train.protocol=$$protocol tracking.run_name=vocoder$$suffix --export $$voc --quiet; fi; \
	  for n in 500 2000; do name=$$( [ $$n = 500 ] && echo mixed500 || echo mixed2k ); \
	    $(LS) generate synth --vocoder $$voc --per-class $$n --out $(GEN)/icbhi-$$name$$suffix --root $(DATA) --quiet; done; \
	  for exp in $(AFT_ROWS); do \
	    set500=$(GEN)/icbhi-mixed500$$suffix; set2k=$(GEN)/icbhi-mixed2k$$suffix; \
	    gen=$$(case $$exp in *mixed500) echo "data.generated=$$set500";; *mixed2k) echo "data.generated=$$set2k";; esac); \
	    $(SWEEP) -c experiments/$$exp$$suffix.yaml data.root=$(DATA) $$gen --seeds $(SEEDS) --quiet; \
	  done; \
	done
	$(LS) compare --experiment icbhi-aft --published --out outputs/compare/icbhi-aft

# Leave-one-stethoscope-out (lungsound.data.splits): EXP=<experiment file stem>, DATA=<ICBHI folder> or DATA=builtin,
# OVERRIDES='key=value ...' for every run (e.g. tracking.experiment=NAME).
EXP ?= icbhi_sgscl
OOD_DEVICES := Meditron LittC2SE Litt3200 AKGC417L
OOD_ROOT = $(if $(filter builtin,$(DATA)),,data.root=$(DATA)) $(OVERRIDES)

.PHONY: icbhi-device-ood
icbhi-device-ood: setup ## train EXP on the official split and on each held-out stethoscope; table of OOD vs in-distribution
	@[ "$(DATA)" = builtin ] || $(MAKE) --no-print-directory check-data DATA="$(DATA)"
	@test -f experiments/$(EXP).yaml || { echo "no experiment file experiments/$(EXP).yaml (EXP=<file stem>)"; exit 2; }
	$(LS) train -c experiments/$(EXP).yaml $(OOD_ROOT) data.split=official --seeds $(SEEDS) --quiet
	set -e; for device in $(OOD_DEVICES); do \
	  $(LS) train -c experiments/$(EXP).yaml $(OOD_ROOT) data.split=device_out=$$device --seeds $(SEEDS) --quiet; \
	done
	$(LS) device-ood -c experiments/$(EXP).yaml $(OVERRIDES) --out outputs/device_ood/$(EXP)

download: setup ## fetch the official ICBHI 2017 archive into data/ICBHI_final_database
	$(LS) data download --dest data

compare: setup ## comparison table of every experiment in the MLflow store (outputs/compare/)
	$(LS) compare --published --out outputs/compare

# --- clinician demo (research use only) ---------------------------------------------------------------------------------
.PHONY: app
APP_ADDRESS ?= 127.0.0.1
APP_PORT    ?= 8501

app: setup ## clinician demo at http://$(APP_ADDRESS):$(APP_PORT); trains the quickstart model first if none exists
	@$(PY) -c "import sys; sys.path.insert(0, 'app'); from models import discover_models; sys.exit(0 if discover_models().choices else 1)" \
	  || { echo "No trained model yet: running make quickstart first."; $(MAKE) quickstart; }
	$(VENV)/bin/streamlit run app/streamlit_app.py --server.address $(APP_ADDRESS) --server.port $(APP_PORT)

# --- the four AST methods on the built-in data at quickstart size (CPU; about 50 minutes on 2 cores) ----------------
.PHONY: bench-builtin
BUILTIN_METHODS := icbhi_ast_ce icbhi_patchmix_cl icbhi_dat_device icbhi_sgscl
BUILTIN_SIZE := data.root=null model.name=ast_tiny model.pretrained=null 'model.params={fstride: 16, tstride: 16}' \
	train.lr=1.0e-3 train.batch_size=8 train.epochs=15 train.ma_beta=null tracking.experiment=builtin-bench

bench-builtin: setup ## the four AST methods, then the RepAugment grid and the AFT pipeline; tiny models, built-in data (~100 min)
	$(SWEEP_CPU) $(foreach exp,$(BUILTIN_METHODS),-c experiments/$(exp).yaml -c experiments/$(exp)_clean.yaml) \
	  $(BUILTIN_SIZE) --seeds $(or $(BENCH_SEEDS),1-3) --quiet --published --out outputs/compare/builtin-bench
	$(MAKE) bench-builtin-repaugment bench-builtin-aft bench-builtin-efficientat

# The RepAugment grid at quickstart size (clean protocol, 3 seeds; 31 minutes measured on 2 shared cores): the tiny AST (10 epochs)
# x {none, SpecAugment, Rep-Mask, Rep-Gen, RepAugment} and a tiny wav2vec 2.0 (6 epochs, 4-s cycles) x the same less
# SpecAugment. Not the paper's models: it shows the grid machinery and how each augmentation behaves at this size.
# Both tiny models are 64-d, narrower than the paper's absolute Rep-Mask bound of 288 dims: they take its share of D.
BUILTIN_REPAUG_AST := $(filter-out train.epochs=15 tracking.experiment=builtin-bench,$(BUILTIN_SIZE)) train.epochs=10 \
	augment.rep_max_width_ratio=0.375
BUILTIN_REPAUG_SPEECH := data.root=null model.name=wav2vec2_tiny model.pretrained=null data.duration=4.0 \
	train.lr=1.0e-3 train.batch_size=8 train.epochs=6 train.ma_beta=null augment.rep_max_width_ratio=0.375

.PHONY: bench-builtin-repaugment
bench-builtin-repaugment: setup ## the RepAugment grid on built-in data: tiny AST and tiny wav2vec 2.0, 3 seeds (~30 min)
	$(SWEEP_CPU) -c experiments/icbhi_ast_repaugment_clean.yaml $(BUILTIN_REPAUG_AST) tracking.experiment=builtin-repaugment \
	  --cells all --seeds $(or $(BENCH_SEEDS),1-3) --quiet
	$(SWEEP_CPU) -c experiments/icbhi_repaug_wav2vec2_clean.yaml $(BUILTIN_REPAUG_SPEECH) \
	  tracking.experiment=builtin-repaugment --cells all --seeds $(or $(BENCH_SEEDS),1-3) --quiet
	$(LS) grid --table-only --experiment builtin-repaugment --out outputs/compare/builtin-repaugment

# [AFT] at quickstart size (clean protocol, 3 seeds): a small DiffWave (4 layers, 16 channels) trained for a few minutes
# on the built-in data without the validation patients, 25 generated cycles per class, then the tiny AST with CE on real
# data, CE on the mixed set and AFT on the mixed set. It shows the pipeline, not the paper's vocoder.
BUILTIN_VOCODER := data.root=null model.residual_layers=4 model.residual_channels=16 train.steps=300 \
	train.batch_size=4 train.protocol=clean train.log_every=50 train.sample_every=150 train.checkpoint_every=150 \
	tracking.experiment=builtin-vocoder tracking.run_name=builtin-vocoder
BUILTIN_AFT := $(filter-out train.epochs=15 tracking.experiment=builtin-bench,$(BUILTIN_SIZE)) train.epochs=10 \
	tracking.experiment=builtin-aft

# [BTS] at quickstart size (clean protocol): a tiny CLAP (1-layer text tower, 2-stage HTSAT of width 8, 16-d
# projections; random init, so the sentence's words mean nothing to it at first) with and without the metadata
# sentence, 4-s cycles at 48 kHz, 10 epochs. It shows the metadata path end to end, not the paper's model.
BUILTIN_CLAP_TINY := 'model.params={overrides: {projection_dim: 16, text_config: {vocab_size: 128, hidden_size: 32, \
	num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 70}, audio_config: \
	{hidden_size: 16, patch_embeds_hidden_size: 8, depths: [1, 1], num_attention_heads: [1, 2], window_size: 8, \
	projection_hidden_size: 16}}}'
BUILTIN_BTS := data.root=null model.pretrained=null data.duration=4.0 train.lr=1.0e-3 train.batch_size=8 \
	train.epochs=10 train.ma_beta=null tracking.experiment=builtin-bts $(BUILTIN_CLAP_TINY)

.PHONY: bench-builtin-bts
bench-builtin-bts: setup ## [BTS] on built-in data: tiny CLAP with and without the metadata sentence, clean protocol
	$(SWEEP_CPU) -c experiments/icbhi_bts_clean.yaml -c experiments/icbhi_clap_audio_clean.yaml $(BUILTIN_BTS) \
	  --seeds $(or $(BENCH_SEEDS),1-3) --quiet --out outputs/compare/builtin-bts

.PHONY: bench-builtin-aft
bench-builtin-aft: setup ## [AFT] on built-in data: small vocoder, mixed set, tiny AST CE / CE-mixed / AFT, 3 seeds
	[ -f $(GEN)/builtin-vocoder/model.safetensors ] || $(LS) generate train -c experiments/vocoder_diffwave.yaml \
	  $(BUILTIN_VOCODER) --export $(GEN)/builtin-vocoder --quiet
	$(LS) generate synth --vocoder $(GEN)/builtin-vocoder --per-class 25 --out $(GEN)/builtin-mixed --quiet
	$(LS) generate evaluate --set $(GEN)/builtin-mixed
	$(SWEEP_CPU) -c experiments/icbhi_aft_ce_real_clean.yaml $(BUILTIN_AFT) --seeds $(or $(BENCH_SEEDS),1-3) --quiet
	$(SWEEP_CPU) -c experiments/icbhi_aft_ce_mixed500_clean.yaml -c experiments/icbhi_aft_mixed500_clean.yaml $(BUILTIN_AFT) \
	  data.generated=$(GEN)/builtin-mixed --seeds $(or $(BENCH_SEEDS),1-3) --quiet --published --out outputs/compare/builtin-aft

# AST + SAM at quickstart size (both protocols): the tiny AST of bench-builtin with the SAM recipe's optimiser, sampler,
# head and label smoothing, at the bench's learning rate (the recipe's 1e-5 is for a pretrained AST). Two passes per step:
# about twice the time of an Adam row.
# model.params.* one key at a time: a whole 'model.params={...}' override would drop the recipe's pooling and head.
BUILTIN_SAM := data.root=null model.name=ast_tiny model.pretrained=null model.params.fstride=16 model.params.tstride=16 \
	train.lr=1.0e-3 train.batch_size=8 train.epochs=15 tracking.experiment=builtin-sam

.PHONY: bench-builtin-sam
bench-builtin-sam: setup ## AST + SAM on built-in data: tiny AST, paper and clean protocols, 3 seeds
	$(SWEEP_CPU) -c experiments/icbhi_ast_sam.yaml -c experiments/icbhi_ast_sam_clean.yaml $(BUILTIN_SAM) \
	  --seeds $(or $(BENCH_SEEDS),1-3) --quiet --published --out outputs/compare/builtin-sam

# --- EfficientAT [EFFAT] (docs/methods.md section 12): AudioSet CNNs that train on a CPU --------------------------------
# The mn04 AudioSet weights: ../shared/models beside the checkout, else the cached or downloaded release (`audioset`).
EFFAT_MN04 := mn04_as_mAP_432.pt
EFFAT_WEIGHTS ?= $(or $(wildcard ../shared/models/efficientat/$(EFFAT_MN04)),audioset)
# Seconds of one 4,142-cycle mn04 training epoch on 2 CPU cores and of the 2,756-cycle test evaluation, measured by
# benchmarks/efficientat_speed.py on this machine (see docs/methods.md section 12).
EFFAT_EPOCH_S := 244
EFFAT_EVAL_S := 59
.PHONY: icbhi-efficientat icbhi-efficientat-cpu bench-builtin-efficientat

icbhi-efficientat: check-data setup ## EfficientAT mn04 and mn10 from AudioSet [EFFAT], both protocols, then the table
	$(SWEEP) -c experiments/icbhi_efficientat_mn04.yaml -c experiments/icbhi_efficientat_mn04_clean.yaml \
	  -c experiments/icbhi_efficientat_mn10.yaml -c experiments/icbhi_efficientat_mn10_clean.yaml data.root=$(DATA) \
	  --seeds $(SEEDS) --out outputs/compare/icbhi-efficientat

icbhi-efficientat-cpu: check-data setup ## EfficientAT mn04 on the official split on this CPU (clean protocol, one seed; hours)
	@echo "EfficientAT mn04 on CPU: about $(EFFAT_EPOCH_S) s of training and $(EFFAT_EVAL_S) s of test evaluation per epoch on 2" \
	  "cores (measured by benchmarks/efficientat_speed.py), with the validation patients about" \
	  "$$(( ($(EFFAT_EPOCH_S) + 13 * $(EFFAT_EVAL_S) / 10) * 80 / 60 )) minutes (about" \
	  "$$(( ($(EFFAT_EPOCH_S) + 13 * $(EFFAT_EVAL_S) / 10) * 80 / 3600 )) h) for the 80 epochs; more cores are faster."
	$(LS) train -c experiments/icbhi_efficientat_mn04_clean.yaml data.root=$(DATA) train.device=cpu \
	  model.pretrained=$(EFFAT_WEIGHTS) tracking.experiment=icbhi-efficientat-cpu

# mn04 fine-tuned from its AudioSet weights on the built-in data, beside the tiny AST of bench-builtin (same experiment,
# same table): the recipe of icbhi_efficientat_mn04 shortened to the AST rows' 15 epochs (warm-up 2, ramp-down 12).
BUILTIN_EFFAT := data.root=null train.epochs=15 train.warmup_epochs=2 train.rampdown_epochs=12 tracking.experiment=builtin-bench
bench-builtin-efficientat: setup ## mn04 from AudioSet on the built-in data, both protocols, 3 seeds (skipped without the weights)
	@w=$$(for f in ../shared/models/efficientat/$(EFFAT_MN04) "$${LUNGSOUND_CACHE:-$$HOME/.cache/lungsound}/models/efficientat/$(EFFAT_MN04)"; \
	  do [ -f "$$f" ] && { echo "$$f"; break; }; done); \
	if [ -z "$$w" ]; then echo "bench-builtin-efficientat: skipped: no EfficientAT mn04 AudioSet weights in ../shared/models/efficientat/" \
	  "or the cache (fetch them once with: $(PY) -c \"from lungsound.models.efficientat_weights import fetch_release; fetch_release('mn04')\")"; \
	  exit 0; fi; \
	$(SWEEP_CPU) -c experiments/icbhi_efficientat_mn04.yaml -c experiments/icbhi_efficientat_mn04_clean.yaml $(BUILTIN_EFFAT) \
	  model.pretrained=$$w --seeds $(or $(BENCH_SEEDS),1-3) --quiet && \
	$(LS) compare --experiment builtin-bench --published --out outputs/compare/builtin-bench

# --- performance card (issue 11): every figure side by side in one run, written to docs/performance.md --------------------
.PHONY: bench-speed
bench-speed: setup ## the performance card docs/performance.md: features, AST train step, PyTorch vs ONNX Runtime vs OpenVINO fp32/bf16/int8
	$(PY) benchmarks/speed_card.py

.PHONY: bench-openvino
bench-openvino: setup ## only the card's OpenVINO section (AST-base, wav2vec2-base, smallest CNN) -> outputs/performance-openvino.md
	$(PY) benchmarks/speed_card.py --only openvino
