"""Experiment tracking: TensorBoard (always) and MLflow (``--mlflow URI``).

Both are Ray Tune logger callbacks running in the driver: Ray's
TBXLoggerCallback writes each trial's events file into its trial folder, and
Ray's MLflowLoggerCallback logs each trial as an MLflow run. The subclasses
here add what a sweep's reader needs: the sweep's metric and its best value
among TensorBoard's HParams, and one MLflow run per trial even across resumes.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import TBXLoggerCallback

from search.outputs.layout import MLFLOW_FILE
from search.outputs.storage import is_uri, tune_dir
from search.space.loader import Space
from trainables.errors import UserError
from trainables.hparams import EPOCH

# Values in every result that say nothing about the trial's quality.
NOT_METRICS = {
    "done",
    "should_checkpoint",
    "reported_at",
    "started_at",
    "images_decoded",
    "iterations_since_restore",
    "time_since_restore",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "training_iteration",
    "pid",
}


class SweepTensorBoard(TBXLoggerCallback):
    """Ray's TensorBoard logger, with ``best_<metric>`` as a scalar and in HParams.

    Ray writes a trial's HParams (its sampled values with its last result's
    metrics) when the trial ends, so TensorBoard's HParams tab lists ended
    trials, each with the best value of the sweep's metric it reached.
    """

    def __init__(self, metric: str, mode: str) -> None:
        super().__init__()
        self._metric, self._mode = metric, mode
        self._best: dict[str, float] = {}

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        value = result.get(self._metric)
        if isinstance(value, int | float):
            best = self._best.get(trial.trial_id)
            if best is None:  # a resumed trial's earlier epochs
                best = trial.metric_analysis.get(self._metric, {}).get(self._mode)
            pick = max if self._mode == "max" else min
            best = value if best is None else pick(best, value)
            self._best[trial.trial_id] = best
            result = {**result, f"best_{self._metric}": best}
        super().log_trial_result(iteration, trial, result)

    def _try_log_hparams(self, trial: Any, result: dict) -> None:
        metrics = {k: v for k, v in result.items() if k.rsplit("/", 1)[-1] not in NOT_METRICS}
        super()._try_log_hparams(trial, metrics)


class SweepMLflow(MLflowLoggerCallback):
    """Ray's MLflow logger: one run per trial, named after the sweep and trial.

    A resumed trial continues its MLflow run (found by its ``trial_id`` tag)
    rather than starting a second one; metrics are logged at each epoch.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, sweep_dir: Path) -> None:
        self._sweep = experiment_name
        self._tags = {"ftsweep.sweep": experiment_name, "ftsweep.results": str(sweep_dir)}
        super().__init__(
            tracking_uri=tracking_uri, experiment_name=experiment_name, tags=dict(self._tags)
        )

    def log_trial_start(self, trial: Any) -> None:
        if trial not in self._trial_runs:
            tags = {**self._tags, "trial_id": trial.trial_id}
            run_id = self._existing_run(trial.trial_id)
            if run_id is None:
                run = self.mlflow_util.start_run(
                    tags=tags, run_name=f"{self._sweep}-{trial.trial_id}"
                )
                run_id = run.info.run_id
                self.mlflow_util.log_params(run_id=run_id, params_to_log=_params(trial))
            self._trial_runs[trial] = run_id

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        metrics = {k: v for k, v in result.items() if k not in NOT_METRICS}
        step = int(result.get(EPOCH) or iteration)
        self.mlflow_util.log_metrics(
            run_id=self._trial_runs[trial], metrics_to_log=metrics, step=step
        )

    def _existing_run(self, trial_id: str) -> str | None:
        client = self.mlflow_util._get_client()
        experiment = client.get_experiment_by_name(self._sweep)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.trial_id = '{trial_id}'"
        )
        return runs[0].info.run_id if runs else None


def _params(trial: Any) -> dict[str, Any]:
    return dict(trial.evaluated_params or trial.config)


def tracking_callbacks(space: Space, sweep_dir: Path, mlflow_uri: str | None) -> list[Any]:
    """TensorBoard's logger, and MLflow's when the sweep logs there."""
    callbacks: list[Any] = [SweepTensorBoard(space.trial.metric, space.trial.mode)]
    if mlflow_uri:
        callbacks.append(SweepMLflow(mlflow_uri, space.name, sweep_dir))
    return callbacks


def mlflow_uri(sweep_dir: Path, given: str | None) -> str | None:
    """The MLflow tracking URI of a sweep, checked before any trial starts:
    ``--mlflow`` (recorded for `resume`), or what an earlier run recorded.

    A plain folder becomes ``sqlite:///FOLDER/mlflow.db``, the local store
    MLflow recommends (MLflow 3 refuses its old ``file://`` folder store
    unless MLFLOW_ALLOW_FILE_STORE=true); URIs are MLflow's to read.
    """
    record = sweep_dir / MLFLOW_FILE
    if given is None:
        if not record.is_file():
            return None
        try:
            uri = str(json.loads(record.read_text())["tracking_uri"])
        except (ValueError, KeyError, TypeError):
            raise UserError(
                f"cannot read the MLflow tracking URI from {MLFLOW_FILE}; give it again "
                "with --mlflow URI, or delete the file to stop logging to MLflow",
                str(record),
            ) from None
    else:
        uri = given if "://" in given or given.startswith("databricks") else _sqlite(given)
    if importlib.util.find_spec("mlflow") is None:
        raise UserError(
            "--mlflow needs the mlflow package, which ftsweep does not install by default; "
            "install it with: pip install 'ftsweep[mlflow]' (or pip install mlflow)",
            "--mlflow",
        )
    _check_mlflow(uri)
    if given is not None:
        record.write_text(json.dumps({"tracking_uri": uri}) + "\n")
    return uri


def _sqlite(folder: str) -> str:
    path = Path(folder).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def _check_mlflow(uri: str) -> None:
    """A store that refuses us now, not after the first trial."""
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many kinds: bad scheme, refused, no server
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"MLflow cannot use the tracking URI {uri} ({reason}); give a folder, "
            "sqlite:///PATH.db, or http://HOST:5000 of a running MLflow server",
            "--mlflow",
        ) from None


def tensorboard_lines(sweep_dir: Path, location: str) -> list[str]:
    """What `ftsweep tensorboard` prints: the command that shows every trial."""
    logdir = tune_dir(sweep_dir)
    events = sorted(logdir.glob("trial_*/events.out.tfevents.*"))
    lines = [f"tensorboard --logdir {logdir}"]
    if is_uri(location):
        lines.append(f"(a copy of {location}'s trial logs; run this command again to refresh it)")
    if not events:
        lines.append("no trial has written TensorBoard events yet (they appear at its first epoch)")
    else:
        trials = len({p.parent for p in events})
        lines.append(
            f"{trials} trials logged: scalars per epoch under ray/tune/, and the HParams tab "
            "with each ended trial's sampled values and best metric"
        )
    if shutil.which("tensorboard") is None and importlib.util.find_spec("tensorboard") is None:
        lines.append("TensorBoard is not installed here: pip install tensorboard")
    return lines
