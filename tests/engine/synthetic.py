"""A tiny on-disk forgery dataset for engine tests: textured photos with a pasted rectangle."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def make_dataset(root: Path, n_tampered: int = 6, n_authentic: int = 2, size: tuple[int, int] = (72, 88),
                 seed: int = 0) -> Path:
    """``root/Tp``, ``root/Gt``, ``root/Au`` and ``root/list.json`` (IMDL-BenCo style)."""
    rng = np.random.default_rng(seed)
    for sub in ("Tp", "Gt", "Au"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    items = []
    H, W = size
    for i in range(n_tampered + n_authentic):
        base = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (5, 5), 2)
        if i < n_tampered:
            h, w = rng.integers(H // 4, H // 2), rng.integers(W // 4, W // 2)
            y, x = rng.integers(0, H - h), rng.integers(0, W - w)
            img = base.copy()
            img[y:y + h, x:x + w] = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)  # noisy patch: easy to find
            mask = np.zeros((H, W), np.uint8)
            mask[y:y + h, x:x + w] = 255
            cv2.imwrite(str(root / "Tp" / f"t{i}.png"), img)
            cv2.imwrite(str(root / "Gt" / f"t{i}_gt.png"), mask)
            items.append([f"Tp/t{i}.png", f"Gt/t{i}_gt.png"])
        else:
            cv2.imwrite(str(root / "Au" / f"a{i}.png"), base)
            items.append([f"Au/a{i}.png", "Negative"])
    (root / "list.json").write_text(json.dumps(items))
    return root
