"""The names of the MLflow tags lungsound writes and reads, defined once.

Every module that writes a tag (`lungsound.training.run`, `lungsound.training.seeds`, `lungsound.generation.loop`, the
sweeps) or reads one (compare, the group queries of `lungsound.tracking.queries`, `lungsound train --register` and
`--resume`, the model card's provenance) names it from here, so a store written by one command is read by every other
under the same names. The values are the ones lungsound has always written: a store made before this module existed
reads the same.

A training run (one seed, `fit`) carries `config_tags(cfg)` (protocol, method, model, experiment file), its `seed`,
`data_root`, `data_fingerprint`, `world_size`, its `run_folder` and, once finished, how its epoch was selected. A
multi-seed group's parent carries `role = parent` and its `seeds` ("1,2,3"); each child points at it with MLflow's
`mlflow.parentRunId`. A sweep's parent whose seeds failed also carries `failed_seeds` and `failure`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

# --- MLflow's own tags --------------------------------------------------------------------------------------------
PARENT_TAG = "mlflow.parentRunId"  # a child run -> its parent (the runs table nests it)
RUN_NAME_TAG = "mlflow.runName"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3's experiment kind (GenAI or model training)
EXPERIMENT_KIND = "custom_model_development"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
SOURCE_NAME_TAG, SOURCE_TYPE_TAG = "mlflow.source.name", "mlflow.source.type"
DATA_CONTEXT_TAG = "mlflow.data.context"  # on a dataset input: what the data was used for

# --- what a run is ------------------------------------------------------------------------------------------------
PROTOCOL_TAG = "protocol"  # paper | clean
METHOD_TAG = "method"
MODEL_TAG = "model"
EXPERIMENT_FILE_TAG = "experiment_file"  # the experiment file's name (cfg.name)
SEED_TAG = "seed"
DATA_ROOT_TAG = "data_root"
DATA_FINGERPRINT_TAG = "data_fingerprint"  # the cycles and labels the run trained and was tested on
WORLD_SIZE_TAG = "world_size"
RUN_FOLDER_TAG = "run_folder"  # where the run's last.pt and best/ are
SELECTED_EPOCH_TAG = "selected_epoch"
SELECTION_TAG = "selection"  # the split that selected the epoch: val (clean) or test (paper)
SELECTION_FALLBACK_TAG = "selection_fallback"
KIND_TAG, VOCODER_KIND = "kind", "vocoder"  # a vocoder's training run (lungsound generate train)
CLIPS_TAG = "clips"

# --- a multi-seed group's parent ----------------------------------------------------------------------------------
ROLE_TAG, PARENT_ROLE = "role", "parent"
SEEDS_TAG = "seeds"
FAILED_SEEDS_TAG, FAILURE_TAG = "failed_seeds", "failure"  # a sweep's seeds that failed twice, and why

# --- a registered model version (`lungsound train --register`) ----------------------------------------------------
VERSION_TAGS = (SEED_TAG, PROTOCOL_TAG, METHOD_TAG, MODEL_TAG, DATA_FINGERPRINT_TAG)  # copied from its run
VERSION_PARENT_TAG = "parent_run_id"  # the multi-seed parent whose best child it is


def config_tags(cfg) -> dict[str, str]:
    """The tags of an experiment config that every training run and group parent carries."""
    return {PROTOCOL_TAG: cfg.train.protocol, METHOD_TAG: cfg.method.name, MODEL_TAG: cfg.model.name,
            EXPERIMENT_FILE_TAG: cfg.name}


def seeds_value(seeds: Iterable[int]) -> str:
    """A group's seeds as its `seeds` tag holds them: [1, 2, 3] -> '1,2,3' (the order given)."""
    return ",".join(map(str, seeds))


def seeds_of(tags: Mapping[str, str]) -> list[int]:
    """The seeds a group's parent planned ([] when it names none)."""
    return [int(s) for s in tags.get(SEEDS_TAG, "").split(",") if s.strip()]


def is_parent(tags: Mapping[str, Any]) -> bool:
    """Whether these are the tags of a multi-seed group's parent run."""
    return tags.get(ROLE_TAG) == PARENT_ROLE


def equals(key: str, value: str) -> str:
    """An MLflow filter clause `tags.<key> = '<value>'`, the value's quotes escaped."""
    quoted = str(value).replace("'", "\\'")
    return f"tags.{key} = '{quoted}'"
