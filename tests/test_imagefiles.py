import cv2
import numpy as np

from sr_deploy.imagefiles import read_rgb
from tests.conftest import pattern_image


def test_read_rgb_scales_16_bit_gray_instead_of_clipping_it(tmp_path):
    """Training, calibration and evaluation read images through read_rgb: a 16-bit gray PNG came out white
    (Pillow's convert clips I;16 to 255); it is scaled to 8 bits, as 16-bit colour PNGs are."""
    gray16 = pattern_image(20, 24, 1, np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), gray16)
    got = read_rgb(tmp_path / "g.png")
    want = np.rint(gray16 / 257.0).astype(np.uint8)
    assert got.shape == (20, 24, 3) and got.dtype == np.uint8
    assert all(np.array_equal(got[..., c], want) for c in range(3))
    rgb = pattern_image(20, 24)
    cv2.imwrite(str(tmp_path / "c.png"), rgb[..., ::-1])
    assert np.array_equal(read_rgb(tmp_path / "c.png"), rgb)
