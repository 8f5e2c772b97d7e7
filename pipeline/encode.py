"""PNG encoding at the input's bit depth, with its alpha.

OpenCV's encoder (libpng with zlib, compression level and strategy under our control) handles 8 and
16 bits, gray, RGB and RGBA; Pillow takes 8-bit gray + alpha, which OpenCV cannot write.
"""

from __future__ import annotations

import io

import numpy as np


def encode_png(pixels: np.ndarray, *, compress_level: int = 1) -> bytes:
    """``(H, W, C)`` uint8/uint16 pixels (C in 1..4) to PNG bytes."""
    import cv2

    c = pixels.shape[2]
    if c == 2:
        if pixels.dtype == np.uint8:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(pixels), mode="LA").save(
                buf, format="PNG", compress_level=compress_level
            )
            return buf.getvalue()
        gray, alpha = pixels[..., :1], pixels[..., 1:]
        pixels = np.concatenate([gray, gray, gray, alpha], axis=2)  # 16-bit gray + alpha as RGBA
        c = 4
    if c == 3:
        arr = pixels[..., ::-1]
    elif c == 4:
        arr = pixels[..., [2, 1, 0, 3]]
    else:
        arr = pixels[..., 0]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise ValueError(f"PNG encoding failed for pixels of shape {pixels.shape} and dtype {pixels.dtype}.")
    return buf.tobytes()
