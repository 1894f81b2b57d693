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
