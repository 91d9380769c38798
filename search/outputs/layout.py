"""Every name in a results folder, RESULTS/NAME/ (docs/SPEC.md), and the trial
statuses of its leaderboard: defined here once.

Ray's own files under tune/ are named in ray_files.py, the one module that
reads them. Commands that only read a results folder (leaderboard, status,
plot) import these without importing Ray.
"""

SPACE_FILE = "space.yaml"
ORIGINAL_SPACE_FILE = "space.original.yaml"  # the space the sweep started from (resume compares)
SPLIT_FILE = "split.csv"
TUNE_DIR = "tune"  # Ray Tune's experiment (ray_files.py)
ASHA_STOPS_FILE = "asha_stops.json"  # in TUNE_DIR: trial id -> epoch ASHA stopped it at
LEADERBOARD_FILE = "leaderboard.csv"
FINALISTS_FILE = "finalists.json"
ENSEMBLE_FILE = "ensemble.json"  # the finalists' ensemble on the test split
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
BEST_DIR = "best"  # the best trial, exported
STORAGE_FILE = "storage.json"  # where Ray's experiment is, with --storage
MLFLOW_FILE = "mlflow.json"  # the MLflow URI the sweep logs to (resume logs there again)
VERSIONS_FILE = "versions.json"  # python, ftsweep, torch, torchvision, ray, optuna (versions.py)
LOCK_FILE = ".ftsweep.lock"  # held by the one driver of the sweep (lock.py)

# An exported model folder (best/, or `ftsweep export --out`).
WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.json"
METRICS_FILE = "metrics.json"

# `ftsweep evaluate`'s folder (MODEL/evaluation by default).
EVALUATION_DIR = "evaluation"
PER_CLASS_FILE = "per_class.csv"
CONFUSION_FILE = "confusion_matrix.csv"
CONFUSION_PLOT = "confusion_matrix.png"
RELIABILITY_PLOT = "reliability.png"  # evaluate's calibration, before and after the temperature
PREDICTIONS_FILE = "predictions.csv"

# A trial's status in the leaderboard.
COMPLETED = "completed"
STOPPED_EARLY = "stopped_early"
ERRORED = "errored"
RUNNING = "running"
PENDING = "pending"
OUT_OF_TIME = "out_of_time"  # ended short of max_epochs by search.time_budget (or never started)
INFEASIBLE_STATUS = "infeasible"  # stopped before its first epoch by search.constraints
STATUSES = (COMPLETED, STOPPED_EARLY, OUT_OF_TIME, INFEASIBLE_STATUS, ERRORED, RUNNING, PENDING)

__all__ = [n for n in dir() if n.isupper()]
