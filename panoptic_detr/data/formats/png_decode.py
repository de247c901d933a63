"""Reading COCO-panoptic PNGs as packed 32-bit pixels, with the same pixels as PIL.

PQ evaluation spends most of its time decoding PNGs. `pyspng` (libspng) decodes an 8-bit
RGB PNG about twice as fast as PIL (measured at 640x480: ~2 ms against ~4 ms of CPU):
PIL's own unfiltering and unpacking is slower, and getting the pixels out of it takes a
second full copy (`tobytes`, a megabyte of fresh memory and its page faults), whereas
libspng writes the array once and spends most of its time in zlib. `pyspng` is
optional: without it, or for anything it should not handle, PIL reads the file exactly
as before. (pyspng does not check chunk CRCs: a file whose checksums are damaged but
whose data is intact is read, where PIL may refuse it.)

Only 8-bit RGB and RGBA PNGs (PNG colour types 2 and 6, interlaced or not) go to
pyspng: those are what panoptic PNGs are, and for them both libraries return the stored
bytes untouched (no gamma, no palette, no bit-depth scaling). Anything else (palette,
grayscale, 16 bits, a damaged file) is left to PIL, which converts it or words the
error as the rest of the package expects.

The result is one uint32 per pixel, little-endian ``R + 256 G + 256^2 B + 256^3 X`` where
X is the alpha byte (pyspng) or PIL's padding byte: callers mask X away (``& 0xFFFFFF``),
and comparing whole words is enough to find where a row changes colour.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
from PIL import Image

from panoptic_detr.errors import DataError

try:
    import pyspng
except ImportError:  # optional speed-up; PIL gives the same pixels
    pyspng = None
try:
    import deflate  # libdeflate: inflates a panoptic PNG's IDAT ~15x faster than zlib
except ImportError:
    deflate = None

__all__ = ["BACKEND", "read_packed_rgb"]

#: "pyspng" when it is installed, else "pil". Tests and bench/pq.py set it to "pil" to
#: time or check the fallback; any other value also means PIL.
BACKEND = "pyspng" if pyspng is not None else "pil"

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_RGB, _RGBA = 2, 6  # PNG colour types


def _is_8bit_rgb(data: bytes) -> bool:
    """Whether the PNG header says 8-bit RGB or RGBA. The IHDR chunk must come first:
    signature (8 bytes), length (4), b"IHDR" (4), width (4), height (4), bit depth (1),
    colour type (1)."""
    return (
        len(data) > 26
        and data[:8] == _SIGNATURE
        and data[12:16] == b"IHDR"
        and data[24] == 8
        and data[25] in (_RGB, _RGBA)
    )


_STORED_BLOCK = 65535  # the most a stored deflate block holds


def _stored_zlib_parts(raw: bytes) -> list:
    """`raw` as the pieces of a zlib stream of stored (uncompressed) deflate blocks.

    Joined, what `zlib.compress(raw, 0)` gives up to block boundaries, about 4x faster:
    that grows its output buffer step by step and runs zlib's adler32; here the caller
    joins once and the checksum is libdeflate's (libspng verifies it).
    """
    view = memoryview(raw)
    n = len(raw)
    parts: list = [b"\x78\x01"]  # deflate, 32K window, no dictionary, "fastest" level
    for start in range(0, n, _STORED_BLOCK) if n else (0,):
        size = min(_STORED_BLOCK, n - start)
        final = start + _STORED_BLOCK >= n
        parts.append(bytes((1 if final else 0,)) + size.to_bytes(2, "little") + (size ^ 0xFFFF).to_bytes(2, "little"))
        parts.append(view[start : start + size])
    parts.append((deflate.adler32(raw) if deflate is not None else zlib.adler32(raw)).to_bytes(4, "big"))
    return parts


def _stored_zlib(raw: bytes) -> bytes:
    """`raw` as one zlib stream of stored deflate blocks (see `_stored_zlib_parts`)."""
    return b"".join(_stored_zlib_parts(raw))


def _with_stored_idat(data: bytes) -> bytes | None:
    """The same PNG with its image data inflated by libdeflate and stored uncompressed.

    Panoptic PNGs are mostly flat colour and compress ~400:1, so zlib's inflate is most of
    libspng's decoding time; libdeflate inflates such a 640x480 file in ~0.1 ms, and libspng
    then only copies stored blocks and unfilters.
    None when the file is not a plain non-interlaced 8-bit RGB(A) PNG or is damaged (the
    caller then decodes the original bytes, and reports errors as before).
    """
    if deflate is None or len(data) < 33 or data[28] != 0:  # interlaced: the inflated size differs
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    expected = height * (width * (3 if data[25] == _RGB else 4) + 1)
    idat, pos = [], 8
    try:
        while pos + 8 <= len(data):
            length = int.from_bytes(data[pos:pos + 4], "big")
            kind = data[pos + 4:pos + 8]
            if kind == b"IDAT":
                idat.append(data[pos + 8:pos + 8 + length])
            elif kind == b"IEND":
                break
            pos += 12 + length
        raw = deflate.zlib_decompress(b"".join(idat), expected)
    except Exception:  # noqa: BLE001 - any damage: let libspng / PIL read and judge the original
        return None
    if len(raw) != expected:
        return None
    stored = _stored_zlib_parts(raw)
    size = sum(len(part) for part in stored)
    # one copy of the pixels into the new file; libspng does not check chunk CRCs (see
    # the module docstring): zeros are fine here.
    return b"".join([data[:33], size.to_bytes(4, "big"), b"IDAT", *stored, b"\x00\x00\x00\x00", _IEND])


def read_packed_rgb(
    path: str | os.PathLike, where: str, release_gil: bool = False
) -> tuple[np.ndarray, tuple[int, int]]:
    """Pixels of an RGB(A) PNG as a flat little-endian uint32 array (see the module
    docstring; the top byte is not part of the colour) and (height, width).

    `release_gil=True` decodes with PIL even when pyspng is there: pyspng holds the GIL
    while it decodes, PIL does not, so with more than two threads PIL gets more done.

    Raises `DataError` (message prefixed by `where`) for a missing or unreadable file and
    for a PNG that is not RGB or RGBA.
    """
    if BACKEND == "pyspng" and not release_gil:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            data = b""  # PIL opens it again and words the error
        if _is_8bit_rgb(data):
            try:
                # RGBA output: 4 bytes a pixel, so the array *is* the packed uint32s (no
                # copy). For an RGB PNG libspng fills alpha with 255.
                rgba = pyspng.load(_with_stored_idat(data) or data, "RGBA")
            except (RuntimeError, ValueError):
                pass  # damaged file: PIL decides whether it can be read, and says why not
            else:
                return rgba.view("<u4").reshape(-1), (rgba.shape[0], rgba.shape[1])
    return _read_with_pil(path, where)


def _read_with_pil(path: str | os.PathLike, where: str) -> tuple[np.ndarray, tuple[int, int]]:
    try:
        with Image.open(path) as im:
            if im.mode == "RGBA":  # the panopticapi reads the first three channels
                im = im.convert("RGB")
            elif im.mode != "RGB":
                raise DataError(f"{where}: not an RGB panoptic PNG (mode {im.mode})")
            # PIL keeps RGB pixels as 4 bytes (R, G, B, padding): one copy gives uint32s.
            raw = np.frombuffer(im.tobytes("raw", "RGBX"), dtype="<u4")
            return raw, (im.size[1], im.size[0])
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{where}: cannot read the PNG ({e})") from None
