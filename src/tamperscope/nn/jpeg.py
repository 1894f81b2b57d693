"""The JPEG round trip shared by the error-level inputs (:mod:`tamperscope.nn.error_level`), IFA-Net's low-pass
branch and the data layer's JPEG augmentation and perturbation (:mod:`tamperscope.data.transforms`)."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import UserError


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode an RGB uint8 image as JPEG at ``quality`` and decode it again (OpenCV/libjpeg, 4:2:0)."""
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise UserError(f"JPEG encoding failed at quality {quality}")
    return cv2.cvtColor(cv2.imdecode(enc, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
