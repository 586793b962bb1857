"""The toy world as a plug-in: a tiny text-to-image task with an exact, programmatic DVReward.

Configs name it, `config.plugins = ("alphagrpo_jax.toy.plugin",)`; the library never imports it (an import
contract test checks this).

    plugin.py        registers the toy's names in the library's registries: reward component "toy_dvreward",
                     prompt source "toy", image transforms "toy", SFT data source "toy", decomposer "toy"
    world.py         palette, shapes, Scene, pillow renderer, layout sampler, perturbations
    prompts.py       GenEval-like prompt grammar (spec <-> canonical text), held-out train/eval split
    decompose.py     exact DVReward records for a prompt; question templates <-> Query; exact scene answers
    verifier.py      P(yes) for a template question about an image, by image analysis (numpy)
    reward.py        the `toy_dvreward` component: the verifier in process, DVReward's aggregation
    prompt_files.py  the RL prompt files (train/eval JSONL question sets)
    transforms.py    the 32 px image transforms
    tokenizer.py     the byte-level BPE tokenizer trained on the SFT corpus
    sft_data.py      SFT documents and packed rows; sft_source.py: the SFT data source and its held-out eval
    data.py          tfds builder (array_record, no TensorFlow), grain reader, build CLI
    serve.py         the verifier and decomposer behind an OpenAI-compatible server (CLI)

world, prompts, decompose, verifier, reward, tokenizer and serve import neither jax nor model code;
prompt_files imports the data pipeline (grain, jax); transforms, sft_data, sft_source and so plugin import model
code; data imports tensorflow_datasets. Nothing is imported here.
"""
