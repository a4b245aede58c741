"""Every experiment file's effective recipe against a table written by hand from issue 18 and methods.md sections 5,
7 to 10 (not read back from the files), and the config rules behind it: DAT's domain count, the Rep-Mask width bound."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lungsound.config import config_from_dict, load_config
from lungsound.errors import LungsoundError
from lungsound.methods import create_objective
from lungsound.models.build import metadata_definitions
from lungsound.training.trainer import objective_params

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

# The SpecAugment draw: "batch" = one in-place mask set for the whole batch behind the 0.841 gate (the SG-SCL lineage:
# SG-SCL, DAT, AFT, and the RepAugment grid's SpecAugment cell); "sample" = per-sample masks behind the gate ([PMCL]);
# "fresh" = the clean protocol's fresh per-sample masks with p = 1. None: a waveform model, nothing to mask. Files with
# SpecAugment off still carry the draw their grid's SpecAugment cell uses.
# Columns: input seconds, batch, CE class-weighted (in effect), SpecAugment on, its draw, AMP, Rep-Mask bound F
# (dimensions), protocol, extra (DAT's domain and n_domains, SG-SCL's domain, the oversampler).
R = dict  # extra settings of a row
SAM_EXTRA = dict(balance=("weighted", None, "once"), label_smoothing=0.1,
                 optimizer=("sam", "adamw", 0.05, False, 1e-5, 1e-4, "constant", 20, None),
                 head=("mean", "dropout", 0.3), wave=(0.1, 0.5, 1e-4, 0.5))
ROWS: dict[str, tuple] = {
    # [PMCL] AST baseline: 8-s cycles, batch 8, class-weighted CE (the reference passes --weighted_loss to it only).
    "icbhi_ast_ce": (8.0, 8, True, True, "sample", True, 288, "paper", R()),
    "icbhi_ast_ce_clean": (8.0, 8, True, True, "fresh", True, 288, "clean", R()),
    "icbhi_patchmix_ce": (8.0, 8, False, True, "sample", True, 288, "paper", R()),
    "icbhi_patchmix_ce_clean": (8.0, 8, False, True, "fresh", True, 288, "clean", R()),
    "icbhi_patchmix_cl": (8.0, 8, False, True, "sample", True, 288, "paper", R()),
    "icbhi_patchmix_cl_clean": (8.0, 8, False, True, "fresh", True, 288, "clean", R()),
    # [SGSCL] DAT and SG-SCL: per-batch draws, plain CE; DAT's discriminator has one output per domain value (paper
    # definitions: 2 age groups, 2 sexes; clean: 3 age groups; 7 chest locations; 4 devices).
    "icbhi_dat_device": (8.0, 8, False, True, "batch", True, 288, "paper", R(domain="device", n_domains=4)),
    "icbhi_dat_device_clean": (8.0, 8, False, True, "fresh", True, 288, "clean", R(domain="device", n_domains=4)),
    "icbhi_dat_age": (8.0, 8, False, True, "batch", True, 288, "paper", R(domain="age_group", n_domains=2)),
    "icbhi_dat_age_clean": (8.0, 8, False, True, "fresh", True, 288, "clean", R(domain="age_group", n_domains=3)),
    "icbhi_dat_sex": (8.0, 8, False, True, "batch", True, 288, "paper", R(domain="sex", n_domains=2)),
    "icbhi_dat_sex_clean": (8.0, 8, False, True, "fresh", True, 288, "clean", R(domain="sex", n_domains=2)),
    "icbhi_dat_location": (8.0, 8, False, True, "batch", True, 288, "paper", R(domain="location", n_domains=7)),
    "icbhi_dat_location_clean": (8.0, 8, False, True, "fresh", True, 288, "clean", R(domain="location", n_domains=7)),
    "icbhi_sgscl": (8.0, 8, False, True, "batch", True, 288, "paper", R(domain="device")),
    "icbhi_sgscl_clean": (8.0, 8, False, True, "fresh", True, 288, "clean", R(domain="device")),
    "icbhi_sgscl_age": (8.0, 8, False, True, "batch", True, 288, "paper", R(domain="age_group")),
    "icbhi_sgscl_age_clean": (8.0, 8, False, True, "fresh", True, 288, "clean", R(domain="age_group")),
    "icbhi_sgscl_sex": (8.0, 8, False, True, "batch", True, 288, "paper", R(domain="sex")),
    "icbhi_sgscl_sex_clean": (8.0, 8, False, True, "fresh", True, 288, "clean", R(domain="sex")),
    "icbhi_sgscl_location": (8.0, 8, False, True, "batch", True, 288, "paper", R(domain="location")),
    "icbhi_sgscl_location_clean": (8.0, 8, False, True, "fresh", True, 288, "clean", R(domain="location")),
    # [AFT]: 5-s cycles, batch 32, one draw per batch, plain unweighted CE in every row (the AFT trainer has none).
    "icbhi_aft_ce_real": (5.0, 32, False, True, "batch", True, 288, "paper", R()),
    "icbhi_aft_ce_real_clean": (5.0, 32, False, True, "fresh", True, 288, "clean", R()),
    "icbhi_aft_ce_mixed500": (5.0, 32, False, True, "batch", True, 288, "paper", R()),
    "icbhi_aft_ce_mixed500_clean": (5.0, 32, False, True, "fresh", True, 288, "clean", R()),
    "icbhi_aft_ce_mixed2k": (5.0, 32, False, True, "batch", True, 288, "paper", R()),
    "icbhi_aft_ce_mixed2k_clean": (5.0, 32, False, True, "fresh", True, 288, "clean", R()),
    "icbhi_aft_mixed500": (5.0, 32, False, True, "batch", True, 288, "paper", R(domain="generated", n_domains=2)),
    "icbhi_aft_mixed500_clean": (5.0, 32, False, True, "fresh", True, 288, "clean", R(domain="generated", n_domains=2)),
    "icbhi_aft_mixed2k": (5.0, 32, False, True, "batch", True, 288, "paper", R(domain="generated", n_domains=2)),
    "icbhi_aft_mixed2k_clean": (5.0, 32, False, True, "fresh", True, 288, "clean", R(domain="generated", n_domains=2)),
    # [REPAUG]: unweighted CE (--weighted_loss off in the authors' trainer), SpecAugment off in the file but its grid
    # cell drawn per batch (paper), the absolute Rep-Mask bound 288 for every backbone, 1,024-d large ones included.
    "icbhi_ast_repaugment": (8.0, 8, False, False, "batch", True, 288, "paper", R()),
    "icbhi_ast_repaugment_clean": (8.0, 8, False, False, "fresh", True, 288, "clean", R()),
    "icbhi_repaug_ver2": (8.0, 8, False, False, "batch", True, 288, "paper", R(balance=("oversample", None, "once"))),
    "icbhi_repaug_ver2_clean": (8.0, 8, False, False, "fresh", True, 288, "clean",
                                R(balance=("oversample", None, "once"))),
    "icbhi_repaug_wav2vec2": (8.0, 8, False, False, None, True, 288, "paper", R()),
    "icbhi_repaug_wav2vec2_clean": (8.0, 8, False, False, None, True, 288, "clean", R()),
    "icbhi_repaug_hubert": (8.0, 8, False, False, None, True, 288, "paper", R()),
    "icbhi_repaug_hubert_clean": (8.0, 8, False, False, None, True, 288, "clean", R()),
    "icbhi_repaug_wavlm": (8.0, 8, False, False, None, True, 288, "paper", R()),
    "icbhi_repaug_wavlm_clean": (8.0, 8, False, False, None, True, 288, "clean", R()),
    "icbhi_repaug_wav2vec2_large": (8.0, 8, False, False, None, True, 288, "paper", R(checkpointing=True)),
    "icbhi_repaug_wav2vec2_large_clean": (8.0, 8, False, False, None, True, 288, "clean", R(checkpointing=True)),
    "icbhi_repaug_hubert_large": (8.0, 8, False, False, None, True, 288, "paper", R(checkpointing=True)),
    "icbhi_repaug_hubert_large_clean": (8.0, 8, False, False, None, True, 288, "clean", R(checkpointing=True)),
    "icbhi_repaug_xls_r_300m": (8.0, 8, False, False, None, True, 288, "paper", R(checkpointing=True)),
    "icbhi_repaug_xls_r_300m_clean": (8.0, 8, False, False, None, True, 288, "clean", R(checkpointing=True)),
    # AST + SAM (Isik et al. 2025, section 14): plain CE with label smoothing 0.1, no SpecAugment, no AMP, weighted
    # sampling with replacement, SAM (rho 0.05) around AdamW 1e-5 / wd 1e-4, constant lr, 20 epochs, mean-token
    # pooling with a Dropout(0.3) + Linear head, waveform gain U(0.9, 1.1) and noise sigma 1e-4, each with p 0.5.
    "icbhi_ast_sam": (8.0, 8, False, False, "sample", False, 288, "paper", R(**SAM_EXTRA)),
    "icbhi_ast_sam_clean": (8.0, 8, False, False, "fresh", False, 288, "clean", R(**SAM_EXTRA)),
    # [BTS]: CLAP at 48 kHz (waveform, no SpecAugment), plain CE, the section 5 recipe; the metadata sentence read under
    # the protocol's definitions (paper: the patient-level chest location). The audio-only baseline reads none.
    "icbhi_bts": (8.0, 8, False, False, None, True, 288, "paper", R(metadata="paper")),
    "icbhi_bts_clean": (8.0, 8, False, False, None, True, 288, "clean", R(metadata="clean")),
    "icbhi_clap_audio": (8.0, 8, False, False, None, True, 288, "paper", R()),
    "icbhi_clap_audio_clean": (8.0, 8, False, False, None, True, 288, "clean", R()),
    # [EFFAT] EfficientAT mn04 / mn10 (section 12): waveform in (its own log-mel), batch 32, mixup with plain CE.
    "icbhi_efficientat_mn04": (8.0, 32, False, False, None, True, 288, "paper", R()),
    "icbhi_efficientat_mn04_clean": (8.0, 32, False, False, None, True, 288, "clean", R()),
    "icbhi_efficientat_mn10": (8.0, 32, False, False, None, True, 288, "paper", R()),
    "icbhi_efficientat_mn10_clean": (8.0, 32, False, False, None, True, 288, "clean", R()),
    # The quickstart (not a paper row): the AST CE recipe's weighting, no SpecAugment, clean protocol.
    "quickstart": (8.0, 8, True, False, "sample", True, 288, "clean", R()),
    "quickstart_patchmix_cl": (8.0, 8, True, False, "sample", True, 288, "clean", R()),
}
DRAWS = {("batch", "paper"): "batch", ("sample", "paper"): "sample", ("sample", "clean"): "fresh"}


def effective(path: Path) -> tuple:
    """The recipe a run of `path` gets: the resolved config, and the objective as the trainer builds it."""
    cfg = load_config(path)
    weights = torch.ones(4) if cfg.method.class_weighted else None
    objective = create_objective(cfg.method.name, 64, 4, class_weights=weights, **objective_params(cfg))
    weighted = objective.class_weights is not None and getattr(objective, "weighted_ce", True)
    a = cfg.augment
    draw = None if cfg.data.input == "waveform" else DRAWS.get((a.per, a.semantics), f"{a.per}/{a.semantics}")
    width = a.rep_max_width if a.rep_max_width_ratio is None else f"{a.rep_max_width_ratio} D"
    extra = {}
    if cfg.method.name in ("dat", "sgscl"):
        extra["domain"] = objective.domain
    if cfg.method.name == "dat":
        extra["n_domains"] = objective.n_domains
    if cfg.data.balance != "none":
        extra["balance"] = (cfg.data.balance, cfg.data.balance_per_class, cfg.data.balance_draw)
    if cfg.model.params.get("gradient_checkpointing"):
        extra["checkpointing"] = True
    if getattr(objective, "label_smoothing", 0.0):
        extra["label_smoothing"] = objective.label_smoothing
    t = cfg.train
    if t.optimizer != "adam":  # SAM's base, radius and ASAM flag, and the rest of the optimiser recipe
        extra["optimizer"] = (t.optimizer, t.sam_base, t.sam_rho, t.sam_adaptive, t.lr, t.weight_decay, t.schedule,
                              t.epochs, t.ma_beta)
    if a.wave_gain or a.wave_noise:
        extra["wave"] = (a.wave_gain, a.wave_gain_p, a.wave_noise, a.wave_noise_p)
    if "pooling" in cfg.model.params:  # the AST's pooling and head (speech models have their own head key)
        p = cfg.model.params
        extra["head"] = (p.get("pooling", "cls_dist"), p.get("head", "norm"), p.get("head_dropout", 0.0))
    if metadata_definitions(cfg) is not None:
        extra["metadata"] = metadata_definitions(cfg)
    return (cfg.data.duration, cfg.train.batch_size, weighted, a.specaug, draw, cfg.train.amp, width,
            cfg.train.protocol, extra)


def test_every_experiment_file_has_a_row():
    files = {p.stem for p in EXPERIMENTS.glob("*.yaml") if not p.stem.startswith("vocoder_")}
    assert files == set(ROWS)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_the_effective_recipe_is_the_table_row(name):
    assert effective(EXPERIMENTS / f"{name}.yaml") == ROWS[name]


def test_dat_domain_count_follows_the_domain_and_too_small_is_refused(tmp_path):
    age = EXPERIMENTS / "icbhi_dat_age_clean.yaml"
    with pytest.raises(LungsoundError) as exc:
        load_config(age, ["method.params.n_domains=2"])
    assert str(exc.value) == (f"{age}: method.params.n_domains=2 is too small for the 'age_group' domain, which has 3 "
                              "values under the clean definitions (leave it out to derive it)")
    assert objective_params(load_config(age, ["method.params.n_domains=5"]))["n_domains"] == 5  # more is allowed
    with pytest.raises(LungsoundError, match=r"method.params.n_domains must be an integer, got True"):
        load_config(age, ["method.params.n_domains=true"])
    with pytest.raises(LungsoundError, match=r"method.params.domain: unknown domain 'age'; choose one of device, "
                                             r"age_group, sex, location, generated"):
        load_config(age, ["method.params.domain=age"])
    # Before: an unset n_domains was the objective's default 4 for every domain.
    assert objective_params(load_config(None, ["method.name=dat", "method.params.domain=sex"]))["n_domains"] == 2
    assert "n_domains" not in objective_params(load_config(None, ["method.name=sgscl"]))


def test_rep_mask_width_bound_keys():
    cfg = load_config(None, ["augment.rep_max_width=192"])  # e.g. the authors' bound for 512-d CNNs
    assert (cfg.augment.rep_max_width, cfg.augment.rep_max_width_ratio) == (192, None)
    with pytest.raises(LungsoundError, match=r"augment.rep_max_width must be an integer >= 1, got 0"):
        load_config(None, ["augment.rep_max_width=0"])
    with pytest.raises(LungsoundError, match=r"augment.rep_max_width: expected int, got 0.375"):
        load_config(None, ["augment.rep_max_width=0.375"])  # the old share of D is now the ratio key
    with pytest.raises(LungsoundError, match=r"augment.rep_max_width_ratio must be null or in \(0, 1\], got 1.5"):
        load_config(None, ["augment.rep_max_width_ratio=1.5"])


def test_a_config_saved_with_the_old_share_of_d_reads_as_the_ratio():
    old = config_from_dict({"augment": {"rep_max_width": 0.375, "specaug": False, "representation": "rep_mask"}},
                           "old/config.yaml")
    assert (old.augment.rep_max_width, old.augment.rep_max_width_ratio) == (288, 0.375)
    new = config_from_dict({"augment": {"rep_max_width": 200}}, "new/config.yaml")
    assert (new.augment.rep_max_width, new.augment.rep_max_width_ratio) == (200, None)
