"""Where a model comes from in MLflow: `runs:/<id>/<path>`, a bare run id, or a registered `models:/<name>/<version>`
(`models:/<name>/latest`: its highest version; or `models:/<name>@<alias>`), resolved to (run id, artifact path) in
the store of `lungsound.tracking`."""

from __future__ import annotations

import re

from lungsound.errors import LungsoundError


def resolve_model_uri(uri: str) -> tuple[str, str]:
    """(run id, artifact path) of `runs:/<id>/<path>`, a bare run id, or a registered `models:/<name>/<version>`
    (or `/latest`, or `@<alias>`)."""
    uri = str(uri).strip()
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].strip("/").partition("/")
        if not run_id:
            raise LungsoundError(f"no run id in {uri!r}; expected runs:/<run id>/model")
        return run_id, path or "model"
    if uri.startswith("models:/"):
        return _registered(uri)
    if not re.fullmatch(r"[0-9a-zA-Z_-]+", uri):
        raise LungsoundError(f"not an MLflow run id or model URI: {uri!r} (expected a run id, runs:/<id>/model or "
                             "models:/<name>/<version>)")
    return uri, "model"


def _registered(uri: str) -> tuple[str, str]:
    from lungsound.tracking import client, model_version, tracking_uri

    ref = uri[len("models:/"):].strip("/")
    mlf = client()
    try:
        if "@" in ref:
            name, alias = ref.rsplit("@", 1)
            version = model_version(mlf, name, alias=alias)
        else:
            name, _, number = ref.rpartition("/")
            if not name or not number:
                raise LungsoundError(f"expected models:/<name>/<version>, models:/<name>/latest or "
                                     f"models:/<name>@<alias>, got {uri!r}")
            version = model_version(mlf, name, number)
    except LungsoundError:
        raise
    except Exception as exc:  # mlflow's own exception types
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise LungsoundError(f"registered model {uri!r} not found in {tracking_uri()}: {detail}") from None
    source = str(version.source or "")
    if source.startswith("runs:/"):
        return resolve_model_uri(source)
    if not version.run_id:
        raise LungsoundError(f"registered model {uri!r} has no source run to load it from (source {source!r})")
    return version.run_id, "model"
