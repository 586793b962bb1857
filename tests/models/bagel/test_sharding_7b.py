"""The full BAGEL-7B-MoT state, built abstractly (nothing allocated), gets a sharding for every array from the
rules table on the 8-device mesh, and no large tensor stays replicated."""
import jax
import numpy as np
from flax import nnx

from alphagrpo_jax.models.bagel import config, model as model_lib
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.parallel import rules as rules_lib


def test_7b_abstract_state_is_sharded():
    cfg = config.bagel_7b_mot()
    mesh = mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})
    abstract = nnx.eval_shape(lambda: model_lib.Bagel(cfg, nnx.Rngs(0)))
    _, state = nnx.split(abstract)
    shardings = rules_lib.state_shardings(state, mesh, rules_lib.DEFAULT_RULES)
    leaves = jax.tree.leaves(nnx.to_pure_dict(state))
    n_params = sum(int(np.prod(x.shape)) for x in leaves)
    assert 14.5e9 < n_params < 14.7e9, n_params  # 14.6B: both experts, ViT, bridges, both sin-cos tables
    assert rules_lib.replicated_fraction(state, shardings, min_size=1 << 20) == []
    # Per-device bytes of the bf16 state: about 1/8 of 29.2 GB.
    per_device = 0
    for x, s in zip(leaves, jax.tree.leaves(nnx.to_pure_dict(shardings),
                                            is_leaf=lambda t: isinstance(t, jax.sharding.NamedSharding))):
        per_device += int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
    assert per_device < 29.3e9 / 8 * 1.05, per_device
    q = state["language_model"]["layers"]["q_proj"]["kernel"]
    assert q.get_value().shape == (28, 2, 3584, 28, 128)
