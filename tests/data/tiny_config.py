"""A config used by tests/test_cli.py: `tiny_config.py:N` sets steps=N."""
import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.steps = int(arg) if arg else 1
    c.optim = ml_collections.ConfigDict(dict(lr=1e-3, b2=0.95))
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    return c
