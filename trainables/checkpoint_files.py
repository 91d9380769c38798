"""The files a trial writes into each of its checkpoints (a light module: the
leaderboard reads meta.json without importing torch)."""

STATE_FILE = "state.pt"  # weights, optimizer, schedule, RNG: torch.load(weights_only=True)
META_FILE = "meta.json"  # the epoch's reported metrics
