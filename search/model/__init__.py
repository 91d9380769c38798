"""A trained model: exported (export), loaded (``load_model``), scored at a
sweep's end (finalists), evaluated and used for predictions (evaluate)."""
