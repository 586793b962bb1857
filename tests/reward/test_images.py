import numpy as np
import pytest

from alphagrpo_jax.reward.images import decode_data_uri, encode_data_uri, to_pil


def test_png_round_trip_is_exact_and_jpeg_is_close():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    png = encode_data_uri(img, "png")
    assert png.startswith("data:image/png;base64,")
    np.testing.assert_array_equal(np.asarray(decode_data_uri(png)), img)
    smooth = np.full((16, 16, 3), (10, 120, 250), np.uint8)
    jpeg = encode_data_uri(smooth, "JPEG", quality=95)
    assert jpeg.startswith("data:image/jpeg;base64,")
    assert np.abs(np.asarray(decode_data_uri(jpeg)).astype(int) - smooth).max() <= 3


def test_bad_images_and_uris():
    with pytest.raises(ValueError, match=r"images\[2\]: expected uint8"):
        to_pil(np.zeros((4, 4, 3), np.float32), "images[2]")
    with pytest.raises(ValueError, match="channels last"):
        to_pil(np.zeros((3, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="image_format"):
        encode_data_uri(np.zeros((4, 4, 3), np.uint8), "gif")
    with pytest.raises(ValueError, match="expected 'data:image"):
        decode_data_uri("http://example.com/cat.png")
    with pytest.raises(ValueError, match="could not decode"):
        decode_data_uri("data:image/png;base64,bm90IGFuIGltYWdl")
