"""Prompt sets as JSONL reward records, read back with grain."""
import pytest

from alphagrpo_jax.data import prompts as data_prompts
from alphagrpo_jax.reward.records import Question, QuestionSet, RecordError


def _records(n):
    return [QuestionSet(prompt=f"prompt {i}", semantic=(Question("semantic", f"Is there thing {i}?", "Existence"),),
                        quality=(Question("quality", "Is it clean?", "Texture"),), original_index=i,
                        extra={"category": "demo"}) for i in range(n)]


def test_write_read_and_batch(tmp_path):
    path = tmp_path / "sub" / "train.jsonl"
    assert data_prompts.write_prompt_file(path, _records(10)) == 10
    source = data_prompts.PromptRecords(path)
    assert len(source) == 10 and source[3] == _records(10)[3]
    ds = data_prompts.prompt_dataset(path, batch_size=4, seed=0, num_epochs=1, shard_index=0, shard_count=1,
                                     drop_remainder=False)
    batches = list(ds)
    assert [len(b) for b in batches] == [4, 4, 2]
    got = [r for b in batches for r in b]
    assert all(isinstance(r, QuestionSet) for r in got)
    assert sorted(r.original_index for r in got) == list(range(10))
    assert got[0].extra == {"category": "demo"}


def test_checkpoint_and_shards(tmp_path):
    path = tmp_path / "p.jsonl"
    data_prompts.write_prompt_file(path, _records(12))
    parts = [{r.original_index for b in data_prompts.prompt_dataset(path, batch_size=2, num_epochs=1,
                                                                    shard_index=i, shard_count=2) for r in b}
             for i in range(2)]
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == set(range(12))
    ds = data_prompts.prompt_dataset(path, batch_size=3, seed=9, shard_index=0, shard_count=1)
    it = iter(ds)
    next(it)
    state = it.get_state()
    want = [[r.prompt for r in next(it)] for _ in range(5)]
    again = iter(ds)
    again.set_state(state)
    assert [[r.prompt for r in next(again)] for _ in range(5)] == want


def test_bad_files_fail_at_start_with_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(_records(1)[0].to_line() + '{"prompt": "x"}\n', encoding="utf-8")
    with pytest.raises(RecordError, match="bad.jsonl:2"):
        data_prompts.PromptRecords(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no prompt records"):
        data_prompts.PromptRecords(empty)


def test_round_dataset_epochs_resume_and_errors(tmp_path):
    path = tmp_path / "r.jsonl"
    data_prompts.write_prompt_file(path, _records(10))
    it = iter(data_prompts.round_dataset(path, prompts_per_round=4, seed=3))
    rounds = [[r.original_index for r in next(it)] for _ in range(5)]  # 20 draws = two epochs
    assert all(len(r) == 4 for r in rounds)
    flat = [i for r in rounds for i in r]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # reshuffled per epoch
    it = iter(data_prompts.round_dataset(path, prompts_per_round=4, seed=3))
    next(it)
    state = it.get_state()
    again = iter(data_prompts.round_dataset(path, prompts_per_round=4, seed=3))
    again.set_state(state)
    assert [r.original_index for r in next(again)] == rounds[1]
    with pytest.raises(ValueError, match="cannot fill a round"):
        data_prompts.round_dataset(path, prompts_per_round=11)
    with pytest.raises(ValueError, match="prompts_per_round"):
        data_prompts.round_dataset(path, prompts_per_round=0)
