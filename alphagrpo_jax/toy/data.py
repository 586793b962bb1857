"""The toy world as a tensorflow-datasets builder (array_record files, no TensorFlow), read with grain.

Build (also writes the RL prompt files with their exact DVReward questions):

    python -m alphagrpo_jax.toy.data --out DIR [--num-train N --num-eval M --seed S
                                                --train-prompts-per-category K --eval-prompts-per-category K]

    DIR/toy_shapes/n<N>_m<M>_s<S>/1.0.0/  toy_shapes-{train,eval}.array_record-*, dataset_info.json
    DIR/prompts/{train,eval}.jsonl          reward records (prompt, questions, category, spec)

Read: `toy_dataset(DIR, "train", batch_size=B)` -> grain.IterDataset of dicts
    image uint8 [B, 32, 32, 3], prompt / category / spec (JSON) / scene (JSON) as str [B], index int64 [B].

Example i of a split draws its category round-robin (CATEGORIES order), its prompt uniformly from that
category's prompts of the split (prompts.py: held-out combinations only in eval) and its scene with
`np.random.default_rng([seed, split_id, i])`: every example is a function of (seed, split, i) alone.
The builder uses only numpy features (`Tensor`, `Text`, `Scalar`) and `file_format="array_record"`, the tfds
path that needs no TensorFlow; `tfds.builder_from_directory(...).as_data_source()` reads it back.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from alphagrpo_jax import paths
from alphagrpo_jax.data.pipeline import build_dataset
from alphagrpo_jax.toy import prompts, world
from alphagrpo_jax.toy.prompt_files import write_prompt_files

NAME = "toy_shapes"
SPLITS = ("train", "eval")


@dataclasses.dataclass
class ToyShapesConfig(tfds.core.BuilderConfig):
    num_train: int = 10_000
    num_eval: int = 1_000
    seed: int = 0


def make_config(num_train: int, num_eval: int, seed: int) -> ToyShapesConfig:
    for field, v in (("num_train", num_train), ("num_eval", num_eval), ("seed", seed)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"toy/data.py {field}: expected an int >= 0, got {v!r}")
    return ToyShapesConfig(name=f"n{num_train}_m{num_eval}_s{seed}", num_train=int(num_train),
                           num_eval=int(num_eval), seed=int(seed),
                           description="toy shapes world: images, prompts, specs, scenes")


def make_example(split: str, index: int, seed: int, pools: dict[str, list[prompts.PromptSpec]]) -> dict:
    """Example `index` of `split` (see module docstring): a dict of numpy/str fields."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    category = prompts.CATEGORIES[index % len(prompts.CATEGORIES)]
    pool = pools[category]
    spec = pool[int(rng.integers(len(pool)))]
    scene = prompts.sample_scene(spec, rng)
    return {"image": world.render(scene), "prompt": prompts.format_prompt(spec), "category": category,
            "spec": spec.dumps(), "scene": json.dumps(scene.to_json(), sort_keys=True), "index": index}


class ToyShapes(tfds.core.GeneratorBasedBuilder):
    """Images of the toy world with their prompts; splits "train" and "eval" by held-out combinations."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    BUILDER_CONFIGS = [make_config(10_000, 1_000, 0)]
    name = NAME

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # tfds locates this file (only to find download checksums; nothing is downloaded here) through the
        # `importlib_resources` backport, which is not installed when the builder lives in a package.
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo built directly: dataset_info_from_configs would look for metadata files next to the code.
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(world.CANVAS, world.CANVAS, 3), dtype=np.uint8),
                "prompt": tfds.features.Text(),
                "category": tfds.features.Text(),
                "spec": tfds.features.Text(),
                "scene": tfds.features.Text(),
                "index": tfds.features.Scalar(dtype=np.int64),
            }),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is generated
        cfg = self.builder_config
        return {"train": self._generate_examples("train", cfg.num_train),
                "eval": self._generate_examples("eval", cfg.num_eval)}

    def _generate_examples(self, split: str, num: int):
        pools = {c: prompts.split_prompts(split, c) for c in prompts.CATEGORIES}
        for i in range(num):
            yield i, make_example(split, i, self.builder_config.seed, pools)


def build(out_dir: str | os.PathLike, num_train: int = ToyShapesConfig.num_train,
          num_eval: int = ToyShapesConfig.num_eval, seed: int = ToyShapesConfig.seed) -> str:
    """Generates the dataset under `out_dir` (reused if already complete); returns its folder."""
    builder = ToyShapes(data_dir=os.fspath(out_dir), config=make_config(num_train, num_eval, seed),
                        file_format="array_record")
    builder.download_and_prepare()
    return os.fspath(builder.data_dir)


def dataset_dir(out_dir: str | os.PathLike, num_train: int, num_eval: int, seed: int) -> str:
    return os.path.join(os.fspath(out_dir), NAME, make_config(num_train, num_eval, seed).name,
                        str(ToyShapes.VERSION))


def data_source(path: str | os.PathLike, split: str):
    """Random-access source of one split of a built dataset folder (the one holding dataset_info.json)."""
    if split not in SPLITS:
        raise ValueError(f"toy/data.py split: expected one of {SPLITS}, got {split!r}")
    path = os.fspath(path)
    if not os.path.exists(os.path.join(path, "dataset_info.json")):
        raise FileNotFoundError(f"toy/data.py: {path} holds no dataset_info.json; pass the folder that "
                                f"`build` returned (DIR/{NAME}/<config>/<version>)")
    return tfds.builder_from_directory(path).as_data_source()[split]


def decode_example(ex: dict) -> dict:
    """tfds Text fields come back as bytes: make them str."""
    return {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in ex.items()}


def toy_dataset(path: str | os.PathLike, split: str, *, batch_size: int, seed: int = 0, shuffle: bool = True,
                num_epochs: int | None = None, drop_remainder: bool = True, shard_index: int | None = None,
                shard_count: int | None = None, equal_shards: bool = True):
    """Batches of one split (see module docstring), host-sharded and checkpointable (data/pipeline.py)."""
    return build_dataset(data_source(path, split), batch_size=batch_size, seed=seed, shuffle=shuffle,
                         num_epochs=num_epochs, transform=decode_example, drop_remainder=drop_remainder,
                         shard_index=shard_index, shard_count=shard_count, equal_shards=equal_shards)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m alphagrpo_jax.toy.data", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (tfds data_dir and prompts/)")
    p.add_argument("--num-train", type=int, default=ToyShapesConfig.num_train, help="train images")
    p.add_argument("--num-eval", type=int, default=ToyShapesConfig.num_eval, help="eval images")
    p.add_argument("--seed", type=int, default=ToyShapesConfig.seed)
    p.add_argument("--train-prompts-per-category", type=int, default=200,
                   help="RL train prompts per category (fewer where a category has fewer; -1 = all)")
    p.add_argument("--eval-prompts-per-category", type=int, default=50,
                   help="RL eval prompts per category (-1 = all)")
    args = p.parse_args(argv)
    per = [None if v == -1 else v for v in (args.train_prompts_per_category, args.eval_prompts_per_category)]
    path = build(args.out, args.num_train, args.num_eval, args.seed)
    files = write_prompt_files(args.out, per[0], per[1], args.seed)
    print(f"dataset: {path}")
    for split, f in files.items():
        with paths.open(f) as fh:
            print(f"{split} prompts: {f} ({sum(1 for _ in fh)} records)")


if __name__ == "__main__":
    main()
