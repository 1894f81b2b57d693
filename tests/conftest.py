from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

# tiny test models run faster on one thread than on two contending ones
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data folder; tests using it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _texture(size: int = 192, seed: int = 0):
    """A natural-looking random texture: smoothed noise at two scales, in colour (uint8 RGB)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.uniform(0, 255, (12, 12, 3)).astype(np.float32), (size, size),
                        interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.uniform(-40, 40, (size, size, 3)).astype(np.float32), (0, 0), 1.2)
    return np.clip(coarse + fine, 0, 255).astype(np.uint8)


def _copy_moved(angle: float = 0.0, seed: int = 0):
    """A texture with a 50×50 square copied 100 pixels away (rotated by ``angle``); the mask marks both copies."""
    import cv2
    import numpy as np

    img = _texture(seed=seed)
    out, gt = img.copy(), np.zeros(img.shape[:2], bool)
    patch = img[20:70, 20:70]
    if angle:
        patch = cv2.warpAffine(patch, cv2.getRotationMatrix2D((25, 25), angle, 1.0), (50, 50))
    out[110:160, 120:170] = patch
    gt[20:70, 20:70] = gt[110:160, 120:170] = True
    return out, gt


@pytest.fixture()
def copy_move():
    """Test photos for the copy-move expert: ``copy_move.texture(size, seed)`` and
    ``copy_move.forged(angle, seed)`` → (image, mask of both copies)."""
    from types import SimpleNamespace

    return SimpleNamespace(texture=_texture, forged=_copy_moved)


def _photo_like(seed: int, size: int = 256):
    """A textured uint8 RGB image with edges and smooth areas, whose DCT histograms look like a photo's."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.normal(128, 60, (size, size, 3)), (0, 0), 3)
    detail = cv2.GaussianBlur(rng.normal(0, 25, (size, size, 3)), (0, 0), 0.8)
    return np.clip(base + detail, 0, 255).astype(np.uint8)


def _jpeg(rgb, quality: int):
    """``rgb`` saved as JPEG at ``quality`` (Pillow, 4:2:0) and decoded."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.array(Image.open(buf).convert("RGB"))


def _double_jpeg_spliced():
    """A photo saved at quality 60, a never-compressed region pasted off the 8×8 grid, saved again at quality 90:
    (image, mask of the pasted region)."""
    import numpy as np

    host = _jpeg(_photo_like(1), 60).copy()
    mask = np.zeros(host.shape[:2], bool)
    mask[67:167, 45:161] = True
    host[mask] = _photo_like(2)[mask]
    return _jpeg(host, 90), mask


def _lossless_edit(quality: int = 75):
    """A photo saved as JPEG at ``quality`` and decoded, a never-compressed region pasted off the 8×8 grid, the result
    kept losslessly: (image, mask of the pasted region)."""
    import numpy as np

    host = _jpeg(_photo_like(1), quality).copy()
    mask = np.zeros(host.shape[:2], bool)
    mask[67:167, 45:161] = True
    host[mask] = _photo_like(2)[mask]
    return host, mask


@pytest.fixture()
def double_jpeg():
    """Test photos for the JPEG-trace experts: ``photo_like(seed)``, ``jpeg(rgb, quality)``, ``spliced()`` (saved
    twice) and ``lossless_edit()`` (decoded, edited, kept lossless) → (image, mask of the pasted region)."""
    from types import SimpleNamespace

    return SimpleNamespace(photo_like=_photo_like, jpeg=_jpeg, spliced=_double_jpeg_spliced,
                           lossless_edit=_lossless_edit)
