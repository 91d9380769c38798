"""ftsweep: search for the best way to fine-tune a pre-trained image classifier."""

from search.export import FineTunedModel, export_trial, load_model
from search.space import Space, load_space
from search.sweep import SweepResult, run_sweep

__all__ = [
    "FineTunedModel",
    "Space",
    "SweepResult",
    "export_trial",
    "load_model",
    "load_space",
    "run_sweep",
]
