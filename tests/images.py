"""Image files of every layout the pipeline must take, and files it must reject, as bytes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(h: int = 24, w: int = 32, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """A smooth colour image with a little texture, uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([xx / max(w - 1, 1), yy / max(h - 1, 1), 0.5 + 0.0 * xx], axis=2)
    return np.clip((base + rng.normal(0, noise, base.shape)) * 255, 0, 255).astype(np.uint8)


def png16(arr: np.ndarray) -> bytes:
    import cv2

    arr = arr[..., ::-1] if arr.ndim == 3 and arr.shape[2] == 3 else arr
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    assert ok
    return buf.tobytes()


def jpeg_with_orientation(arr: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares a huge image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def animated_gif() -> bytes:
    frames = [Image.fromarray(np.full((16, 20, 3), v, np.uint8)).convert("P") for v in (200, 20, 90)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def good_files() -> dict[str, bytes]:
    """name -> bytes of valid images in every mode (names include nesting, spaces and non-ASCII)."""
    rgb = photo()
    gray = rgb.mean(axis=2).astype(np.uint8)
    rgba = np.dstack([rgb, np.tile(np.linspace(0, 255, rgb.shape[1], dtype=np.uint8), (rgb.shape[0], 1))])
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    return {
        "rgb.png": _save(Image.fromarray(rgb), "PNG"),
        "nested/deeper/gray.png": _save(Image.fromarray(gray), "PNG"),
        "nested/rgba.png": _save(Image.fromarray(rgba, "RGBA"), "PNG"),
        "nested/gray alpha.png": _save(Image.fromarray(np.dstack([gray, gray[::-1]]), "LA"), "PNG"),
        "16bit/rgb16.png": png16(rgb.astype(np.uint16) * 257 + 3),
        "16bit/gray16.png": _save(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"),
        "palette.png": _save(palette, "PNG"),
        "cmyk.jpg": _save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95),
        "rotated.JPG": jpeg_with_orientation(photo(24, 40), 6),
        "animated.gif": animated_gif(),
        "tiny 1x1.png": _save(Image.fromarray(np.array([[[10, 200, 30]]], np.uint8)), "PNG"),
        "odd size.bmp": _save(Image.fromarray(photo(23, 37, 1)), "BMP"),
        "scan.tiff": _save(Image.fromarray(photo(20, 20, 2)), "TIFF"),
        "web.webp": _save(Image.fromarray(photo(18, 26, 3)), "WEBP", lossless=True),
        "ünïcödé/фото №1.png": _save(Image.fromarray(photo(16, 16, 4)), "PNG"),
    }


def bad_files() -> dict[str, bytes]:
    """name -> bytes that must fail with a reason, never stop a run."""
    png = _save(Image.fromarray(photo(64, 64)), "PNG")
    jpg = _save(Image.fromarray(photo(64, 64)), "JPEG")
    return {
        "bad/empty.png": b"",
        "bad/truncated.png": png[: len(png) // 2],
        "bad/truncated.jpg": jpg[: len(jpg) // 3],
        "bad/not an image.png": b"this is a text file, not an image\n" * 10,
        "bad/random.jpg": np.random.default_rng(0).bytes(2048),
        "bad/bomb.png": bomb_png(),
    }


def eps_bytes() -> bytes:
    """An EPS file (PostScript that draws an 8x8 square): Pillow's EPS decoder would run Ghostscript on it."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
        b"0 0 moveto 8 0 lineto 8 8 lineto 0 8 lineto closepath fill\nshowpage\n%%EOF\n"
    )


def psd_bytes(h: int = 8, w: int = 8) -> bytes:
    """A Photoshop file of ``h`` x ``w`` RGB pixels, raw: a header, three empty sections, the planes."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3)
    planes = photo(h, w).transpose(2, 0, 1).tobytes()
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + planes
