"""The results folder, RESULTS/NAME/: its names (layout), Ray's saved files
(ray_files, the only module that opens them), the leaderboard, status,
report.md, plots and shared storage. Never imports Ray at module level, so
commands that only read a sweep start fast."""
