"""One input image on its way through `prepare`, and its image file (header, pixels, copy)."""

from __future__ import annotations

import io
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from panoptic_detr.data.formats.coco_panoptic import PanopticImage
from panoptic_detr.data.formats.common import SourceImage
from panoptic_detr.errors import DataError

__all__ = ["Item", "stem", "image_header", "load_pixels", "write_image", "VOID_REGION", "BACKGROUND_REGION"]

_ORIENTATION = 0x0112  # the EXIF tag
# `Item.cats` entries of annotations that are regions, not classes (labelme's conventions)
VOID_REGION = 0  # `__ignore__`: its pixels become VOID
BACKGROUND_REGION = -1  # `_background_`: its pixels show the stuff again


@dataclass
class Item:
    src: SourceImage
    cats: list = field(default_factory=list)  # per annotation: target category id, None (dropped) or a *_REGION
    seg_map: dict = field(default_factory=dict)  # panoptic: source category_id -> target id or None
    thing_classes: set = field(default_factory=set)
    annotated: set | None = None  # thing category ids annotated exhaustively (None: every thing class)
    orientation: int = 1
    truth: PanopticImage | None = None
    bad: bool = False
    image_id: int = 0
    split: str = "train"

    @property
    def name(self) -> str:
        return self.src.name


def stem(name: str) -> str:
    return os.path.splitext(name)[0]


def _open(item: SourceImage):
    return Image.open(io.BytesIO(item.image_bytes) if item.image_bytes is not None else item.image_path)


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def image_header(item: SourceImage, decode: bool = True) -> tuple[int, int, int]:
    """(width, height) as displayed (EXIF orientation applied) and the orientation, from the header.

    decode: also decode the image, so that a truncated or corrupt file is reported now
    (as a missing one is) rather than copied into the dataset: `Image.verify()` (PNG
    chunk checksums) then a load (JPEGs decoded at 1/8 scale: every byte is still read)."""
    where = f"{item.source}: embedded imageData" if item.image_bytes is not None else f"{item.image_path}"
    try:
        with _open(item) as im:
            w, h = im.size
            try:
                orient = int(im.getexif().get(_ORIENTATION, 1) or 1)
            except Exception:
                orient = 1
    except FileNotFoundError:
        raise DataError(f"{item.source}: {item.ref}: image file {where} not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{item.source}: {item.ref}: cannot read image {where} ({_first_line(e)})") from None
    if decode:
        try:
            with _open(item) as im:
                im.verify()
            with _open(item) as im:
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))
                im.load()
        except (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError) as e:
            raise DataError(f"{item.source}: {item.ref}: image file {where} is truncated or corrupt "
                            f"(cannot decode: {_first_line(e)})") from None
    if orient in (5, 6, 7, 8):
        w, h = h, w
    return w, h, orient


def load_pixels(item: Item) -> np.ndarray:
    """The image as displayed (EXIF orientation applied), uint8 HxWx3."""
    src = item.src
    where = src.image_path if src.image_bytes is None else f"{src.source}: embedded imageData"
    try:
        with Image.open(src.image_path if src.image_bytes is None else io.BytesIO(src.image_bytes)) as im:
            im.load()
            if item.orientation != 1:
                im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{where}: cannot decode image ({msg}) ({src.ref})") from None


def write_image(it: Item, dst: Path) -> None:
    src = it.src
    if it.orientation == 1:
        if src.image_bytes is not None:
            dst.write_bytes(src.image_bytes)
        else:
            shutil.copyfile(src.image_path, dst)
        return
    # stored rotated: write it upright, without the EXIF tag, so every reader agrees with the PNG
    arr = load_pixels(it)
    fmt = "JPEG" if dst.suffix.lower() in (".jpg", ".jpeg") else None
    Image.fromarray(arr).save(dst, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
