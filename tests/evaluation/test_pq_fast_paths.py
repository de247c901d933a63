"""The fast paths of PQ evaluation give exactly what the plain ones give: pyspng vs PIL
decoding (and PIL for whatever pyspng must not handle), the sort-free pair counting, and
the decoder choice made for threads."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import panopticapi_reference as reference
import pq_synthetic as synth
from panoptic_detr.errors import DataError
from panoptic_detr.data.formats import png_decode
from panoptic_detr.evaluation import panoptic_quality as pq
from panoptic_detr.evaluation.forked_map import fork_available, forked_map
from panoptic_detr.evaluation import pq_pair_counts
from panoptic_detr.evaluation.panoptic_quality import OFFSET, pq_compute
from panoptic_detr.evaluation.pq_pair_counts import pair_counts


def write_png_by_hand(path: Path, pixels: np.ndarray, bit_depth: int = 8, interlace: bool = False) -> None:
    """An RGB PNG (HxWx3, uint8 or big-endian uint16) with filter type 0, optionally Adam7
    interlaced: what PIL cannot write."""
    h, w, _ = pixels.shape
    pixels = pixels.astype(">u2" if bit_depth == 16 else np.uint8)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes if interlace else [(0, 0, 1, 1)]:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + row.tobytes() for row in sub)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, 2, 0, 0, int(interlace))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def panopticapi_ids(path: Path) -> np.ndarray:
    return reference.rgb2id(np.array(Image.open(path), dtype=np.uint32)).astype(np.uint32)


def read_ids(path: Path, backend: str) -> np.ndarray:
    old = png_decode.BACKEND
    png_decode.BACKEND = backend
    try:
        raw, shape = png_decode.read_packed_rgb(path, str(path))
    finally:
        png_decode.BACKEND = old
    return (raw & np.uint32(0xFFFFFF)).reshape(shape)


def random_ids(rng, h=37, w=53) -> np.ndarray:
    """Blocky id maps with ids spanning all three bytes (and both ends of the range)."""
    palette = np.array([0, 1, 255, 256, 65535, 65536, 0xFFFFFF, 0x123456, 0xABCDEF])
    return palette[rng.integers(0, palette.size, (h // 4 + 1, w // 4 + 1))].repeat(4, 0).repeat(4, 1)[:h, :w]


BACKENDS = ["pil"] + (["pyspng"] if png_decode.pyspng is not None else [])


class CountingPyspng:
    def __init__(self, module):
        self.module, self.calls = module, []

    def load(self, data, fmt=None):
        self.calls.append(fmt)
        return self.module.load(data, fmt)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoders_return_the_panopticapis_ids(tmp_path, backend, monkeypatch):
    spy = CountingPyspng(png_decode.pyspng)
    monkeypatch.setattr(png_decode, "pyspng", spy)
    rng = np.random.default_rng(0)
    ids = random_ids(rng)
    rgb = synth.id2rgb(ids)
    cases = {"rgb.png": lambda p: Image.fromarray(rgb).save(p)}
    # RGBA with varying alpha: the panopticapi ignores the fourth channel
    rgba = np.dstack([rgb, rng.integers(0, 256, ids.shape, dtype=np.uint8)])
    cases["rgba.png"] = lambda p: Image.fromarray(rgba, "RGBA").save(p)
    cases["interlaced.png"] = lambda p: write_png_by_hand(p, rgb, interlace=True)
    cases["rgb16.png"] = lambda p: write_png_by_hand(p, rgb.astype(np.uint16) * 256 + 3, bit_depth=16)
    cases["level0.png"] = lambda p: Image.fromarray(rgb).save(p, compress_level=0)
    for name, write in cases.items():
        path = tmp_path / name
        write(path)
        got = read_ids(path, backend)
        assert got.dtype == np.uint32 and (got == panopticapi_ids(path)).all(), name
        assert (got == ids).all(), name
        # pyspng takes the 8-bit RGB(A) files, PIL the 16-bit one
        assert len(spy.calls) == (0 if backend == "pil" or name == "rgb16.png" else 1), name
        spy.calls.clear()


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoder_errors(tmp_path, backend):
    rng = np.random.default_rng(1)
    rgb = synth.id2rgb(random_ids(rng))
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    with pytest.raises(DataError, match=r"not an RGB panoptic PNG \(mode P\)"):
        read_ids(tmp_path / "palette.png", backend)
    Image.fromarray(rgb).save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated.png: cannot read the PNG"):
        read_ids(tmp_path / "truncated.png", backend)
    (tmp_path / "garbage.png").write_bytes(b"not a png at all" * 10)
    with pytest.raises(DataError, match="garbage.png: cannot read the PNG"):
        read_ids(tmp_path / "garbage.png", backend)
    with pytest.raises(DataError, match="missing.png: file not found"):
        read_ids(tmp_path / "missing.png", backend)


def test_pair_counts_with_id_lists_equal_numpy_unique(monkeypatch):
    rng = np.random.default_rng(2)
    gt = random_ids(rng, 64, 80).astype(np.uint32).ravel()
    pred = random_ids(rng, 64, 80).astype(np.uint32).ravel()
    keys, counts = np.unique(gt.astype(np.int64) * OFFSET + pred, return_counts=True)
    full = (np.unique(gt), np.unique(pred))
    partial = (np.array([0, 256, 0xFFFFFF], np.uint32), np.array([0], np.uint32))  # ids missing: added
    extra = (np.array([0, 7, 256, 65535, 999999], np.uint32), np.unique(np.append(pred, 42)))  # unused ids
    for gk, pk in (full, partial, extra, (None, None)):
        for max_cells in (pq_pair_counts.MAX_TABLE_CELLS, 1):  # the table, and the sort for huge tables
            monkeypatch.setattr(pq_pair_counts, "MAX_TABLE_CELLS", max_cells)
            pg, pp, c = pair_counts(gt, pred, gk, pk)
            assert (pg * OFFSET + pp == keys).all() and (c == counts).all()
    # top bytes (alpha) that differ between pixels do not split pairs
    alpha = rng.integers(0, 256, gt.size).astype(np.uint32) << np.uint32(24)
    pg, pp, c = pair_counts(gt | alpha, pred | alpha[::-1], *full)
    assert (pg * OFFSET + pp == keys).all() and (c == counts).all()


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    return synth.random_set(tmp_path_factory.mktemp("pq"), 5, n_images=6, h=60, w=80)


def test_every_decoder_and_thread_count_equals_reference(synthetic_set, monkeypatch):
    ref = reference.pq_compute(*synthetic_set)
    results = []
    for backend in BACKENDS:
        monkeypatch.setattr(png_decode, "BACKEND", backend)
        for workers in (1, 2, 3):  # 3 threads decode with PIL (releases the GIL)
            results.append(pq_compute(*synthetic_set, workers=workers))
    for ours in results:
        assert ours == results[0]
        for group in ("All", "Things", "Stuff"):
            for k in ("pq", "sq", "rq"):
                assert abs(ours[group][k] - ref[group][k]) < 1e-12


def test_pq_with_interlaced_and_rgba_predictions(synthetic_set, tmp_path):
    gt_json, gt_dir, pred_json, pred_dir = synthetic_set
    pred = json.loads(Path(pred_json).read_text())
    out = tmp_path / "pred"
    out.mkdir()
    for i, ann in enumerate(pred["annotations"]):
        rgb = np.array(Image.open(Path(pred_dir) / ann["file_name"]).convert("RGB"))
        if i % 2:
            write_png_by_hand(out / ann["file_name"], rgb, interlace=True)
        else:
            Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]), "RGBA").save(out / ann["file_name"])
    assert pq_compute(gt_json, gt_dir, pred_json, out, workers=1) == pq_compute(*synthetic_set, workers=1)


@pytest.mark.skipif(png_decode.deflate is None or png_decode.pyspng is None, reason="needs deflate and pyspng")
def test_libdeflate_path_gives_the_same_pixels_with_split_image_data(tmp_path):
    """The fast path re-stores the inflated image data; several IDAT chunks, RGB and RGBA,
    all give PIL's pixels, and a damaged stream falls back to the normal readers."""
    rng = np.random.default_rng(3)
    ids = random_ids(rng, 61, 47)
    rgb = synth.id2rgb(ids)
    for name, image in {"rgb.png": Image.fromarray(rgb),
                        "rgba.png": Image.fromarray(np.dstack([rgb, np.full(ids.shape, 7, np.uint8)]), "RGBA")}.items():
        buf = io.BytesIO()
        image.save(buf, "PNG")
        data = buf.getvalue()
        assert png_decode._with_stored_idat(data) is not None, name
        # the same file with its IDAT cut into three chunks
        start = data.index(b"IDAT") - 4
        length = int.from_bytes(data[start:start + 4], "big")
        stream = data[start + 8:start + 8 + length]
        cuts = [stream[: length // 3], stream[length // 3: 2 * length // 3], stream[2 * length // 3:]]
        split = data[:start] + b"".join(len(c).to_bytes(4, "big") + b"IDAT" + c + b"\0\0\0\0" for c in cuts) + \
            data[start + 12 + length:]
        path = tmp_path / name
        path.write_bytes(split)
        assert (read_ids(path, "pyspng") == ids).all(), name
    bad = bytearray(data)
    bad[start + 8 + length // 2] ^= 0xFF
    assert png_decode._with_stored_idat(bytes(bad)) is None



def test_worker_processes_equal_in_process_scoring_and_report_errors(synthetic_set, monkeypatch, tmp_path):
    """Forked worker processes (what large sets use) give the in-process numbers exactly,
    keep the chosen decoder, and a bad file in a worker is the same one-line DataError."""
    if not fork_available():
        pytest.skip("no fork on this platform: pq_compute uses threads")
    monkeypatch.setattr(pq, "MIN_IMAGES_PER_PROCESS", 1)
    calls = []

    def spy(fn, items, workers, on_result=None):
        calls.append(workers)
        return forked_map(fn, items, workers, on_result)

    monkeypatch.setattr(pq, "forked_map", spy)
    one = pq_compute(*synthetic_set, workers=1)
    assert calls == []
    assert pq_compute(*synthetic_set, workers=2) == one
    assert pq_compute(*synthetic_set, workers=3, progress=True) == one
    assert calls == [2, 3]
    monkeypatch.setattr(png_decode, "BACKEND", "pil")  # inherited by the forked workers
    assert pq_compute(*synthetic_set, workers=2) == one
    gt_json, gt_dir, pred_json, pred_dir = synthetic_set
    pred = json.loads(Path(pred_json).read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    for ann in pred["annotations"]:
        (broken / ann["file_name"]).write_bytes((Path(pred_dir) / ann["file_name"]).read_bytes())
    last = pred["annotations"][-1]  # scored by a child with 2 workers and 6 images
    (broken / last["file_name"]).write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{last['file_name']}.*cannot read the PNG"):
        pq_compute(gt_json, gt_dir, pred, broken, workers=2)


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no")


def _square_or_fail(x):
    if x == "bad":
        raise _Unpicklable("item bad")
    if x == "data":
        raise DataError("file.png: broken")
    return x * x


@pytest.mark.skipif(not fork_available(), reason="no fork on this platform")
def test_forked_map_order_progress_and_errors(monkeypatch):
    forked = []
    real_fork = os.fork

    def fork():
        pid = real_fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    seen = []
    assert forked_map(_square_or_fail, list(range(11)), 3, on_result=seen.append) == [i * i for i in range(11)]
    assert sum(seen) == 11
    assert forked_map(_square_or_fail, [2], 4) == [4]  # more workers than items
    with pytest.raises(DataError, match="file.png: broken"):  # from a child (item 1 of 2 workers)
        forked_map(_square_or_fail, [1, "data", 3, 4], 2)
    with pytest.raises(RuntimeError, match="item bad"):  # cannot be pickled: its text comes back
        forked_map(_square_or_fail, [1, "bad"], 2)
    with pytest.raises(DataError):  # in the parent's own share: the children are stopped and reaped
        forked_map(_square_or_fail, ["data", 1, 2, 3], 2)
    assert len(forked) == 2 + 0 + 1 + 1 + 1
    for pid in forked:  # every child was reaped: none left behind, running or zombie
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_stored_zlib_stream_round_trips():
    rng = np.random.default_rng(0)
    for n in (0, 1, 65535, 65536, 3 * 65535 + 7):
        raw = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert zlib.decompress(png_decode._stored_zlib(raw)) == raw
