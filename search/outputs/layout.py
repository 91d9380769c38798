"""The names inside a results folder, RESULTS/NAME/ (docs/SPEC.md), in one light module.

Commands that only read a results folder (leaderboard, status, plot) import
these without importing Ray.
"""

SPACE_FILE = "space.yaml"
SPLIT_FILE = "split.csv"
TUNE_DIR = "tune"
LEADERBOARD_FILE = "leaderboard.csv"
FINALISTS_FILE = "finalists.json"
