"""MLflow tracking: where runs go, what each run records, and how runs are found again.

- `store`: the tracking URI and store (`tracking_uri`, `store_exists`), the client (`client`, its calls retried after
  a lost race: `retry`), experiments (`experiment_id`) and new model versions (`register_model`);
- `retry`: store calls that lose a race with another process are tried again (`RetryingClient`);
- `runs`: one run written through the client API (`RunLogger`), its environment tags and `ends_on_error`;
- `tags`: the name of every tag lungsound writes or reads, defined once (`ROLE_TAG`, `SEEDS_TAG`, `PARENT_TAG`, ...);
- `queries`: every lookup of runs (deleted ones refused or warned about: `live_run`), multi-seed groups,
  experiments, artifacts (`download_artifacts`) and registered models.

Every public name of `store`, `runs`, `tags` and `queries` is importable from here (`from lungsound.tracking import client, RunLogger`).
"""

from lungsound.tracking.queries import (artifact_paths, check_live, children_of, download_artifacts, experiment_name,
                                        find_experiment, find_experiments, find_run, finished_runs, group_parents,
                                        live_run, model_version, model_versions, registered_models,
                                        run_of_model_folder)
from lungsound.tracking.runs import RunLogger, ends_on_error, environment_tags, git_state
from lungsound.tracking.store import client, experiment_id, register_model, store_exists, tracking_uri
from lungsound.tracking.tags import (CLIPS_TAG, DATA_CONTEXT_TAG, DATA_FINGERPRINT_TAG, DATA_ROOT_TAG,
                                     EXPERIMENT_FILE_TAG, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, FAILED_SEEDS_TAG,
                                     FAILURE_TAG, GIT_COMMIT_TAG, KIND_TAG, METHOD_TAG, MODEL_TAG, PARENT_ROLE,
                                     PARENT_TAG, PROTOCOL_TAG, ROLE_TAG, RUN_FOLDER_TAG, RUN_NAME_TAG, SEED_TAG,
                                     SEEDS_TAG, SELECTED_EPOCH_TAG, SELECTION_FALLBACK_TAG, SELECTION_TAG,
                                     SOURCE_NAME_TAG, SOURCE_TYPE_TAG, VERSION_PARENT_TAG, VERSION_TAGS, VOCODER_KIND,
                                     WORLD_SIZE_TAG, config_tags, is_parent, seeds_of, seeds_value)

__all__ = [
    "artifact_paths", "check_live", "children_of", "download_artifacts", "experiment_name", "find_experiment",
    "find_experiments", "find_run", "finished_runs", "group_parents", "live_run", "model_version", "model_versions",
    "registered_models", "run_of_model_folder",
    "RunLogger", "ends_on_error", "environment_tags", "git_state",
    "client", "experiment_id", "register_model", "store_exists", "tracking_uri",
    "CLIPS_TAG", "DATA_CONTEXT_TAG", "DATA_FINGERPRINT_TAG", "DATA_ROOT_TAG", "EXPERIMENT_FILE_TAG",
    "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "FAILED_SEEDS_TAG", "FAILURE_TAG", "GIT_COMMIT_TAG", "KIND_TAG",
    "METHOD_TAG", "MODEL_TAG", "PARENT_ROLE", "PARENT_TAG", "PROTOCOL_TAG", "ROLE_TAG", "RUN_FOLDER_TAG",
    "RUN_NAME_TAG", "SEED_TAG", "SEEDS_TAG", "SELECTED_EPOCH_TAG", "SELECTION_FALLBACK_TAG", "SELECTION_TAG",
    "SOURCE_NAME_TAG", "SOURCE_TYPE_TAG", "VERSION_PARENT_TAG", "VERSION_TAGS", "VOCODER_KIND", "WORLD_SIZE_TAG",
    "config_tags", "is_parent", "seeds_of", "seeds_value",
]
