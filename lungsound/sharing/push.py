"""Publishing a model folder on the Hugging Face hub: stage it with its model card, then upload it as one commit.

`stage(folder, out, repo_id)` checks the folder loads with the runtime that runs it
(`lungsound.inference.runtimes.runtime_for`: a checkpoint's weights are rebuilt into its model; an export's model.onnx
opens in ONNX Runtime), then writes `out` as a whole (`lungsound.storage`: built beside it and swapped in; `out` must be
new, empty or a folder staged before, `STAGED_FOLDER`) holding exactly what a user needs and nothing else, the files
that runtime names (`Runtime.files`):

- a checkpoint folder (`lungsound train`): model.safetensors, config.yaml, meta.json;
- an exported folder (`lungsound export`, fp32 or int8): model.onnx, export.json, config.yaml, meta.json and, when it
  has them, the PyTorch weights for explanations;
- README.md, the model card (`lungsound.sharing.card`).

The selected epoch's evaluation arrays (evaluation.npz: per-cycle test logits and labels) stay behind. `push` then
calls `HfApi.create_repo(exist_ok=True)` and `HfApi.upload_folder` once; files of a previous push that this one does
not carry (e.g. model.onnx when a PyTorch checkpoint replaces an export) are deleted in the same commit. The token is
huggingface_hub's own ($HF_TOKEN, else the one `hf auth login` stored); no token, `HF_HUB_OFFLINE=1`, or any failure
of the hub or the network is a one-line `LungsoundError`, and nothing local is changed. `api` replaces the `HfApi`
client (anything with the same two methods), so a push can be exercised without the network.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lungsound import __version__
from lungsound.errors import LungsoundError, one_line
from lungsound.inference.runtimes import RUNTIMES, runtime_for
from lungsound.inference.sources import check_repo_id
from lungsound.sharing.card import DEFAULT_LICENSE, model_card
from lungsound.sharing.provenance import Provenance
from lungsound.storage import FolderKind, claim_output_dir, replace_dir, temp_dir_beside

MODEL_FILES = tuple(dict.fromkeys(name for _, runtime in RUNTIMES.items() for name in runtime.files))
CARD_FILE = "README.md"
# what `stage` writes: the card and the model's config always, and only model files besides
STAGED_FOLDER = FolderKind("a staged model folder", (CARD_FILE, "config.yaml"), tuple(MODEL_FILES) + (CARD_FILE,))
REPLACED_PATTERNS = sorted({f"*{Path(name).suffix}" for name in MODEL_FILES})  # a previous push's model files


@dataclass
class PushResult:
    repo_id: str
    files: list[str]  # the files staged (and uploaded), README.md included
    folder: Path | None = None  # the staged folder when it was kept (--out)
    url: str | None = None  # the commit on the hub, when uploaded
    commit: str | None = None


def model_files(folder: str | Path) -> list[str]:
    """The files of `folder` that a push carries (see the module docstring), after checking that the folder loads."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LungsoundError("no such model folder", folder)
    runtime = runtime_for(folder)
    runtime.open(folder, device="cpu", threads=1)  # one line for a folder that does not load (a swapped model.onnx)
    return [name for name in runtime.files if (folder / name).is_file()]


def stage(folder: str | Path, out: str | Path, repo_id: str, *, provenance: Provenance | None = None,
          license: str = DEFAULT_LICENSE) -> PushResult:
    """Write the folder to upload, `out`: the model's files and its README.md (see the module docstring)."""
    repo_id = check_repo_id(repo_id)
    folder, out = Path(folder), Path(out)
    claim_output_dir(out, STAGED_FOLDER, folder)
    names = model_files(folder)
    card = model_card(folder, repo_id, provenance=provenance, license=license, files=names + [CARD_FILE])
    tmp = temp_dir_beside(out)
    try:
        for name in names:
            shutil.copy2(folder / name, tmp / name)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        replace_dir(tmp, out, STAGED_FOLDER, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PushResult(repo_id, sorted(names + [CARD_FILE]), folder=out)


def push(folder: str | Path, repo_id: str, *, provenance: Provenance | None = None, license: str = DEFAULT_LICENSE,
         private: bool = False, commit_message: str | None = None, api=None) -> PushResult:
    """Stage `folder` and upload it to the hub repository `repo_id` (created when missing) as one commit."""
    repo_id = check_repo_id(repo_id)
    api = api if api is not None else hub_api()
    with tempfile.TemporaryDirectory(prefix="lungsound-push-") as tmp:
        staged = stage(folder, Path(tmp) / "repo", repo_id, provenance=provenance, license=license)
        message = commit_message or f"lungsound push: {Path(folder).resolve().name}"
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            info = api.upload_folder(repo_id=repo_id, folder_path=str(staged.folder), repo_type="model",
                                     commit_message=message, delete_patterns=REPLACED_PATTERNS)
        except Exception as exc:  # huggingface_hub's HTTP errors, the network's, a refused token: one line each
            raise LungsoundError(f"could not push to the Hugging Face hub repository {repo_id}: "
                                 f"{one_line(exc, with_type=True)}") from None
    url = getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}"
    return PushResult(repo_id, staged.files, url=url, commit=getattr(info, "oid", None))


def hub_api():
    """huggingface_hub's client with the user's token; a one-line error when pushing cannot work (offline, no token)."""
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise LungsoundError("HF_HUB_OFFLINE is set: pushing to the Hugging Face hub needs the network (unset it, or "
                             "stage the folder locally with --out DIR)")
    if get_token() is None:
        raise LungsoundError("no Hugging Face token: run `hf auth login` or set $HF_TOKEN to a token with write access")
    return HfApi(library_name="lungsound", library_version=__version__)
