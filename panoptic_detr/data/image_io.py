"""Reading images as RGB uint8 arrays, whatever their file mode.

`load_image(path)` honours the EXIF orientation and converts every mode to RGB uint8:
grayscale (L, 1, I, I;16, F), with alpha (LA, RGBA, PA: alpha dropped, colours kept),
palette (P, with or without transparency), CMYK, YCbCr, LAB and 16-bit files (scaled
0..65535 -> 0..255). A file that cannot be decoded raises `PanopticDetrError` naming it.
`to_rgb_array(image)` does the same for an in-memory PIL image or numpy array.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from panoptic_detr.errors import PanopticDetrError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm")

__all__ = ["IMAGE_EXTENSIONS", "load_image", "to_rgb_array", "is_image_file", "find_images"]


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _scale_to_uint8(arr: np.ndarray, full_scale: float) -> np.ndarray:
    """Linear map [0, full_scale] -> [0, 255], rounded and clipped."""
    out = np.clip(np.rint(arr.astype(np.float64) * (255.0 / full_scale)), 0, 255)
    return out.astype(np.uint8)


def _integer_to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        finite = arr[np.isfinite(arr)]
        top = float(finite.max()) if finite.size else 0.0
        # float images are either 0..1 or already on the 0..255 scale
        return _scale_to_uint8(np.nan_to_num(arr), 1.0 if top <= 1.0 else 255.0)
    if arr.dtype.itemsize == 2:  # 16-bit samples
        return _scale_to_uint8(arr, 65535.0)
    # wider integers (PIL mode "I"): 8-bit or 16-bit content stored in 32 bits
    top = int(arr.max()) if arr.size else 0
    if top <= 255:
        return np.clip(arr, 0, 255).astype(np.uint8)
    if top <= 65535:
        return _scale_to_uint8(arr, 65535.0)
    return _scale_to_uint8(arr, float(top))


def to_rgb_array(image) -> np.ndarray:
    """A PIL image or numpy array (HxW, HxWx1, HxWx3, HxWx4; any integer/float type) ->
    contiguous HxWx3 uint8 RGB. PIL images are NOT EXIF-rotated here (see `load_image`)."""
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[:, :, :3] if arr.shape[2] != 1 else arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(_integer_to_uint8(arr)[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 3:
        arr = _integer_to_uint8(arr)
    else:
        raise ValueError(f"expected an HxW or HxWxC (C in 1, 3, 4) image, got shape {tuple(np.shape(image))}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError("empty image")
    return np.ascontiguousarray(arr)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("P", "PA"):
        # palette (with transparency info or not): colours through the palette, alpha dropped
        return np.asarray(img.convert("RGBA"), dtype=np.uint8)[:, :, :3].copy()
    if mode in ("RGBA", "RGBa", "RGBX", "LA", "La"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    if mode in ("L", "1"):
        gray = np.asarray(img.convert("L"), dtype=np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            arr = arr.astype(np.uint16, copy=False)
        return to_rgb_array(arr)
    # CMYK, YCbCr, LAB, HSV, ...: PIL knows the conversion
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, EXIF orientation applied.

    Raises `PanopticDetrError("<path>: cannot read image (...)")` for missing, empty,
    truncated or non-image files.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Palette images with Transparency"
            with Image.open(path) as img:
                img.load()
                try:
                    img = ImageOps.exif_transpose(img)
                except Exception:  # a broken EXIF block: keep the pixels as stored
                    pass
                arr = _pil_to_rgb(img)
    except FileNotFoundError:
        raise PanopticDetrError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PanopticDetrError(f"{path}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise PanopticDetrError(f"{path}: cannot read image (not an image file or unknown format)") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PanopticDetrError(f"{path}: cannot read image ({msg})") from None
    if arr.size == 0:
        raise PanopticDetrError(f"{path}: cannot read image (empty image)")
    return arr


def find_images(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Expand files, folders (recursively, images by extension, sorted) and glob patterns.

    Returns `(paths, problems)`: the image paths in input order without duplicates, and
    one message per input that matched nothing. Files named explicitly are kept whatever
    their extension (a non-image fails later, when read, with its name).
    """
    import glob

    paths: list[Path] = []
    seen: set[Path] = set()
    problems: list[str] = []

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            paths.append(p)

    for item in inputs:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and is_image_file(q))
            if not found:
                problems.append(f"{p}: no images in folder")
            for q in found:
                add(q)
        elif p.is_file():
            add(p)
        elif glob.has_magic(s):
            matches = sorted(glob.glob(s, recursive=True))
            found = []
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    found.extend(sorted(q for q in mp.rglob("*") if q.is_file() and is_image_file(q)))
                elif mp.is_file() and is_image_file(mp):
                    found.append(mp)
            if not found:
                problems.append(f"{s}: no images match")
            for q in found:
                add(q)
        else:
            problems.append(f"{p}: file not found")
    return paths, problems
