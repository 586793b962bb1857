"""BAGEL's resize rule (hand-computed cases), PIL bicubic resize and pixel normalisation."""
import numpy as np
import pytest
from PIL import Image

from alphagrpo_jax.models.bagel import image_transform as it


@pytest.mark.parametrize("transform, w, h, img_num, expected", [
    # min side 42 -> scale 224/42: 56*5.333 = 298.67 -> 299 -> 14*round(21.36) = 294; 42*5.333 = 224.
    (it.VIT_TRANSFORM, 56, 42, 1, (294, 224)),
    # short side 500 < 512: scale 1.024 -> exactly (1024, 512).
    (it.VAE_TRANSFORM, 1000, 500, 1, (1024, 512)),
    # banker's rounding: 315/14 = 22.5 -> 22 (half-up would give 322); 300/14 = 21.43 -> 21.
    (it.VIT_TRANSFORM, 315, 300, 1, (308, 294)),
    # max_pixels quirk: budget 1806336/2 = 903168 < 980*980 = 960400; the AREA ratio 0.9404 is applied
    # linearly: 980*0.9404 = 921.6 -> 922 -> 14*round(65.86) = 924 (a sqrt-correct factor would give 952).
    (it.VIT_TRANSFORM, 980, 980, 2, (924, 924)),
    # min side forces 4000x1000 -> 2048x512; long side > 1024 -> scale 0.5 -> (1024, 256).
    (it.VAE_TRANSFORM, 4000, 1000, 1, (1024, 256)),
    # 8000x1000 -> 4096x512 (2.10M px > 1.81M): factor 0.861328125 -> 3528 (3528/16 = 220.5 -> 220, banker's)
    # = 3520 and 441 -> 448; then long side: 1024/3520 -> (1024, 130.3 -> 130 -> 128).
    (it.VAE_TRANSFORM, 8000, 1000, 1, (1024, 128)),
    # a tiny image is scaled up to the minimum, and never below one stride.
    (it.VIT_TRANSFORM, 1, 1, 1, (224, 224)),
])
def test_target_size_hand_computed(transform, w, h, img_num, expected):
    assert transform.target_size(w, h, img_num=img_num) == expected
    assert it.target_size(w, h, transform.max_size, transform.min_size, transform.stride, transform.max_pixels,
                          img_num) == expected


def test_target_size_rejects_empty_images():
    with pytest.raises(ValueError, match="must be positive, got 0x5"):
        it.VIT_TRANSFORM.target_size(0, 5)


def test_resize_is_pil_bicubic_and_identity_when_size_fits():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    out = it.VIT_TRANSFORM.resize(img)  # scale 1 -> snap: 400 -> 406 (28.57 -> 29), 300 -> 294
    assert out.size == (406, 294)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img.resize((406, 294), Image.Resampling.BICUBIC)))
    fits = Image.fromarray(rng.integers(0, 256, (224, 280, 3), dtype=np.uint8))
    assert it.VIT_TRANSFORM.resize(fits) is fits
    with pytest.raises(TypeError, match="expected a PIL image"):
        it.VIT_TRANSFORM.resize(np.zeros((4, 4, 3)))


def test_to_pixels_matches_golden_normalisation(goldens_dir):
    e = np.load(goldens_dir / "e_vit.npz")
    pixels = it.to_pixels(Image.fromarray(e["image_uint8"]))
    assert pixels.dtype == np.float32 and pixels.shape == (42, 56, 3)
    np.testing.assert_array_equal(pixels, e["pixels"].transpose(1, 2, 0))
    # Every level equals torchvision's ToTensor + Normalize(0.5, 0.5) float32 arithmetic bit for bit.
    levels = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)
    x = levels.astype(np.float32)
    expected = (x / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    np.testing.assert_array_equal(it.to_pixels(Image.fromarray(levels)), expected)


def test_call_composites_alpha_on_white_then_resizes():
    rgba = Image.new("RGBA", (224, 224), (0, 0, 0, 0))  # fully transparent black
    pixels = it.VIT_TRANSFORM(rgba)
    assert pixels.shape == (224, 224, 3)
    np.testing.assert_array_equal(pixels, 1.0)
    gray = Image.new("L", (10, 20), 0)
    assert it.VIT_TRANSFORM(gray).shape == (448, 224, 3)
