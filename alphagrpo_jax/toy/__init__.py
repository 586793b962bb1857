"""The toy world: a tiny text-to-image task with an exact, programmatic DVReward.

    world.py      palette, shapes, Scene, pillow renderer, layout sampler, perturbations
    prompts.py    GenEval-like prompt grammar (spec <-> canonical text), held-out train/eval split
    decompose.py  exact DVReward records for a prompt; question templates <-> Query; exact scene answers
    verifier.py   P(yes) for a template question about an image, by image analysis (numpy)
    data.py       tfds builder (array_record, no TensorFlow), grain reader, build CLI

Nothing here imports jax or model code (data.py imports tensorflow_datasets, so it is not imported here).
"""
