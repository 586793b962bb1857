"""Data plumbing that knows nothing of models: grain pipelines (pipeline.py) and RL prompt sets (prompts.py)."""
