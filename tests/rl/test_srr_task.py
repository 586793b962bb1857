"""SRR: the stage-2 context (the image twice: VAE latents on the gen expert, then ViT tokens; one RoPE id each),
reward flooring at r_init, and skipping rounds where nothing improved."""
import concurrent.futures

import numpy as np

from alphagrpo_jax.models.bagel import config, packing
from alphagrpo_jax.models.bagel.attention import CAUSAL, FULL
from alphagrpo_jax.models.bagel.packed_forward import TEXT, VAE, VIT
from alphagrpo_jax.reward.service import RewardResult
from alphagrpo_jax.rl.tasks import srr
from alphagrpo_jax.sampling import srr as srr_sampling
from alphagrpo_jax.toy import transforms as toy_transforms


class ByteTok:
    def encode(self, s):
        return [16 + b for b in s.encode()]


def test_stage2_context_layout():
    cfg = config.toy()
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:16, 8:16] = 255
    tok = ByteTok()
    text = lambda s: packing.Text(tuple(tok.encode(s)))  # noqa: E731
    cond, tu, iu = srr_sampling.srr_items(text, "a red circle", image, toy_transforms.VAE_TRANSFORM,
                                          toy_transforms.VIT_TRANSFORM, "SYS")
    kinds = [type(x).__name__ for x in cond]
    assert kinds == ["Text", "VaeImage", "VitImage", "Text"]
    assert [type(x).__name__ for x in tu] == ["Text", "VaeImage", "VitImage"]
    assert [type(x).__name__ for x in iu] == ["Text", "Text"]
    n_lat = (32 // cfg.latent_downsample) ** 2
    p = packing.pack([[cond]], cfg, [0], vae_tokens={id(cond[1]): np.zeros((n_lat, cfg.patch_latent_dim))})
    b = p.batch
    n_sys = len("SYS") + 2
    vae = slice(n_sys, n_sys + n_lat + 2)
    vit = slice(vae.stop, vae.stop + 4 + 2)
    assert list(b.kind[0, vae]) == [TEXT] + [VAE] * n_lat + [TEXT]   # markers und, latents gen
    assert list(b.kind[0, vit]) == [TEXT] + [VIT] * 4 + [TEXT]       # ViT tokens und
    assert set(b.positions[0, vae]) == {n_sys} and set(b.positions[0, vit]) == {n_sys + 1}
    assert set(b.modes[0, vae]) == {FULL} and set(b.modes[0, vit]) == {FULL}
    refl = slice(vit.stop, vit.stop + len(tok.encode(srr_sampling.reflection_prompt("a red circle"))) + 2)
    assert list(b.positions[0, refl]) == list(range(n_sys + 2, n_sys + 2 + refl.stop - refl.start))
    assert set(b.modes[0, refl]) == {CAUSAL}
    assert p.rope_advance[0] == n_sys + 2 + (refl.stop - refl.start)


def test_floor_and_skip():
    r = np.array([[0.2, 0.5, 0.1], [0.3, 0.3, 0.2]])
    floored, improved = srr.floor_rewards(r, np.array([0.3, 0.3]))
    np.testing.assert_allclose(floored, [[0.3, 0.5, 0.3], [0.3, 0.3, 0.3]])
    assert improved
    floored, improved = srr.floor_rewards(r, np.array([0.6, 0.3]))
    assert not improved and np.all(floored == floored.max(axis=1, keepdims=True))


def test_round_rewards_report_gain_and_skip_signal():
    fut = concurrent.futures.Future()
    fut.set_result(RewardResult(np.array([0.2, 0.6, 0.1, 0.1], np.float32), {}, [{}] * 4, [], {}, {}))
    rd = srr.SRRRound("srr", result=None, future=fut, group_size=2, r_init=np.array([0.3, 0.1], np.float32))
    got = rd.rewards()
    np.testing.assert_allclose(got.rewards, [[0.3, 0.6], [0.1, 0.1]], rtol=1e-6)
    assert got.has_signal and got.metrics["srr/any_improved"] == 1.0
    assert abs(got.metrics["srr/improved_frac"] - 0.25) < 1e-9
    fut2 = concurrent.futures.Future()
    fut2.set_result(RewardResult(np.array([0.2, 0.3, 0.1, 0.1], np.float32), {}, [{}] * 4, [], {}, {}))
    got = srr.SRRRound("srr", None, fut2, 2, r_init=np.array([0.3, 0.1], np.float32)).rewards()
    assert got.metrics["srr/any_improved"] == 0.0 and not got.has_signal  # the trainer skips such a round
