"""The study's optional ``tracking:`` block: MLflow, TensorBoard and Weights & Biases, checked before Ray.

    tracking:
      mlflow: {uri: http://mlflow.lab:5000, experiment: distill}   # experiment defaults to the study name
      tensorboard: true                                            # results/<study>/tensorboard/<trial_id>/
      wandb: {project: emoe, mode: offline}                        # the study is the W&B group

``preflight`` finds every problem at once (a missing package, an unreachable tracking server, no W&B key
for online mode) and raises ``SpecError``, so the CLI exits with status 2 before Ray starts and before
anything is created. ``harness.tune.trackers.tracking_callbacks`` builds the Ray Tune logger callbacks.
"""

from __future__ import annotations

import contextlib
import netrc
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.study.envvars import environ
from harness.study.errors import SpecError

__all__ = ["MLflowTracking", "TrackingSpec", "WandbTracking", "mlflow_uri", "preflight"]

#: Seconds a preflight waits for a tracking server before calling it unreachable.
REACH_TIMEOUT_S = 10


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MLflowTracking(_Strict):
    """An MLflow tracking store; the study is one experiment (default: named as the study)."""

    uri: str | None = None  # default: $MLFLOW_TRACKING_URI (required one way or the other)
    experiment: str | None = Field(default=None, min_length=1)


class WandbTracking(_Strict):
    """A Weights & Biases project; the study is one group of runs. Offline runs sync later (`wandb sync`)."""

    project: str = Field(min_length=1)
    entity: str | None = None
    mode: Literal["online", "offline"] = "online"


def _flag(v: object) -> object:
    """``mlflow: true`` means the defaults, ``false`` off (like ``report:``)."""
    if v is True:
        return {}
    return None if v is False else v


class TrackingSpec(_Strict):
    """Where trials are also logged while the study runs (Parquet stays the record of results)."""

    mlflow: MLflowTracking | None = None
    tensorboard: bool = False
    wandb: WandbTracking | None = None

    _flags = field_validator("mlflow", mode="before")(_flag)

    @property
    def enabled(self) -> list[str]:
        """Names of the trackers turned on, in a fixed order."""
        on = {"mlflow": self.mlflow is not None, "tensorboard": self.tensorboard, "wandb": self.wandb is not None}
        return [name for name, flag in on.items() if flag]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def mlflow_uri(spec: MLflowTracking) -> str | None:
    """The tracking URI a study logs to: the spec's, else ``$MLFLOW_TRACKING_URI``."""
    return spec.uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def _check_mlflow(spec: MLflowTracking, study: str) -> list[str]:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        return ["tracking.mlflow: the mlflow package is not installed (pip install 'emoe-harness[mlflow]')"]
    uri = mlflow_uri(spec)
    if uri is None:
        return ["tracking.mlflow.uri: required (or set MLFLOW_TRACKING_URI), e.g. http://host:5000 or "
                "sqlite:////abs/path/mlflow.db; the harness writes nothing to the current directory by itself"]
    local = _local_store(uri)
    if local is not None and not local.exists():
        # opening a store that does not exist yet creates it, and a check (a dry run) must create nothing:
        # MLflow is tried on a store of the same kind in a temporary folder, and the place on writability
        parent = next((p for p in local.parents if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            return [f"tracking.mlflow.uri: cannot create the MLflow store {local}: {parent} is not a writable "
                    "folder"]
        with tempfile.TemporaryDirectory() as scratch:
            probe = uri.replace(str(local), str(Path(scratch) / local.name), 1)
            try:
                MlflowClient(tracking_uri=probe).get_experiment_by_name(spec.experiment or study)
            except Exception as exc:  # e.g. a file store without MLFLOW_ALLOW_FILE_STORE
                return [f"tracking.mlflow.uri: cannot use the MLflow tracking store {uri}: {_first_line(exc)}"]
        return []
    # one quick attempt, not MLflow's minutes of retries: a server that is down must fail the check now
    # MLflow reads its HTTP retry settings from the environment
    with environ(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(REACH_TIMEOUT_S)):
        try:
            client = MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(spec.experiment or study)
        except Exception as exc:  # any failure here means the store cannot be used
            return [f"tracking.mlflow.uri: cannot use the MLflow tracking store {uri}: {_first_line(exc)}"]
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        return [f"tracking.mlflow.experiment: {experiment.name!r} is deleted in {uri}; restore it there "
                "or choose another experiment name"]
    return []


def _local_store(uri: str) -> Path | None:
    """The file or folder of a local MLflow store (``file:`` or ``sqlite:`` URI, or a plain path), else None."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri.removeprefix("sqlite:///")
        return Path(path) if path and path != ":memory:" else None
    if parsed.scheme == "file":
        return Path(parsed.path)
    return Path(uri) if parsed.scheme == "" else None


def _wandb_key(base_url: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    with contextlib.suppress(OSError, netrc.NetrcParseError):
        return netrc.netrc().authenticators(urlparse(base_url).hostname or "") is not None
    return False


def _check_wandb(spec: WandbTracking) -> list[str]:
    try:
        import wandb  # noqa: F401
    except ImportError:
        return ["tracking.wandb: the wandb package is not installed (pip install 'emoe-harness[wandb]')"]
    if spec.mode == "offline":
        return []
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    if not _wandb_key(base):
        return [f"tracking.wandb: online mode needs an API key for {base} (run `wandb login` or set "
                "WANDB_API_KEY), or use mode: offline and `wandb sync` later"]
    try:
        urllib.request.urlopen(base, timeout=REACH_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        pass  # the server answered
    except (OSError, ValueError) as exc:
        return [f"tracking.wandb: cannot reach {base}: {_first_line(exc)} (mode: offline works without network)"]
    return []


def preflight(tracking: TrackingSpec | None, study: str) -> None:
    """Check that every tracker of the study can be used; ``SpecError`` listing every problem if not."""
    if tracking is None:
        return
    errors: list[str] = []
    if tracking.mlflow is not None:
        errors += _check_mlflow(tracking.mlflow, study)
    if tracking.tensorboard:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            errors.append("tracking.tensorboard: the tensorboardX package is not installed "
                          "(pip install tensorboardX)")
    if tracking.wandb is not None:
        errors += _check_wandb(tracking.wandb)
    if errors:
        raise SpecError(errors)  # the study file's problems: the command line names the file
