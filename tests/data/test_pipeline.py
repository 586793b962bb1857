"""Grain plumbing: host sharding, seeded shuffling per epoch, checkpoint/restore of iterators."""
import numpy as np
import pytest

from alphagrpo_jax.data import pipeline


def _items(n):
    return [{"x": np.int64(i), "name": f"item{i}"} for i in range(n)]


def _take(it, k):
    return [next(it)["x"].tolist() for _ in range(k)]


def test_two_shards_cover_the_data_disjointly():
    src = _items(20)
    seen = []
    for index in range(2):
        ds = pipeline.build_dataset(src, batch_size=2, seed=1, num_epochs=1, shard_index=index, shard_count=2)
        got = [x for batch in ds for x in batch["x"].tolist()]
        assert len(got) == 10
        seen.append(set(got))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(20))


def test_equal_shards_drop_the_remainder_unless_asked_not_to():
    src = _items(11)
    sizes = [len(pipeline.shard_dataset(src, i, 3)) for i in range(3)]
    assert sizes == [3, 3, 3]
    uneven = [list(pipeline.shard_dataset(src, i, 3, equal_shards=False)) for i in range(3)]
    assert sorted(int(e["x"]) for part in uneven for e in part) == list(range(11))


def test_shuffle_is_seeded_and_each_epoch_is_reshuffled():
    src = _items(16)

    def order(seed):
        ds = pipeline.build_dataset(src, batch_size=16, seed=seed, num_epochs=2, shard_index=0, shard_count=1)
        return [b["x"].tolist() for b in ds]

    a, b = order(5), order(6)
    assert a == order(5) and a != b
    assert sorted(a[0]) == sorted(a[1]) == list(range(16)) and a[0] != a[1]
    plain = pipeline.build_dataset(src, batch_size=4, shuffle=False, num_epochs=1, shard_index=0, shard_count=1)
    assert [x for batch in plain for x in batch["x"].tolist()] == list(range(16))


def test_restoring_a_mid_epoch_state_gives_the_same_batches():
    src = _items(30)
    ds = pipeline.build_dataset(src, batch_size=4, seed=3, shard_index=1, shard_count=2,
                                transform=lambda e: {**e, "x": e["x"] * 10})
    it = iter(ds)
    _take(it, 2)  # mid-epoch: 8 of this shard's 15
    state = it.get_state()
    expected = _take(it, 6)  # runs into the next epochs
    restored = iter(ds)
    restored.set_state(state)
    assert _take(restored, 6) == expected
    assert all(x % 10 == 0 for batch in expected for x in batch)


def test_strings_are_batched_and_custom_batch_fn():
    ds = pipeline.build_dataset(_items(6), batch_size=3, shuffle=False, num_epochs=1, shard_index=0, shard_count=1)
    first = next(iter(ds))
    assert first["name"].tolist() == ["item0", "item1", "item2"]
    listed = pipeline.build_dataset(_items(6), batch_size=3, shuffle=False, num_epochs=1, batch_fn=list,
                                    shard_index=0, shard_count=1)
    assert isinstance(next(iter(listed)), list)


def test_default_shard_comes_from_jax_and_bad_values_are_rejected():
    import jax

    assert pipeline.host_shard() == (jax.process_index(), jax.process_count())
    with pytest.raises(ValueError, match="shard_index"):
        pipeline.host_shard(2, 2)
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.build_dataset(_items(4), batch_size=0)
    with pytest.raises(ValueError, match="cannot feed"):
        pipeline.shard_dataset(_items(1), 0, 2)
