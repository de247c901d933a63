"""A teacher asked a window of images at a time (`data.prepare.teach`): the same dataset,
byte for byte, as the teacher asked image by image, with 1 or 2 workers; a helper process
(`teacher_only`) asks the same windows and writes nothing."""

from pathlib import Path

import numpy as np
import pytest

from panoptic_detr.cli import main
from panoptic_detr.data.prepare import PrepareOptions, prepare
from panoptic_detr.data.prepare.teach import answer_each
from panoptic_detr.errors import DataError

COCO = [{"id": 1, "name": "person", "isthing": 1}, {"id": 149, "name": "road", "isthing": 0},
        {"id": 187, "name": "sky-other-merged", "isthing": 0}]


def content_teacher(image: np.ndarray):
    """Sky where the image is brighter than its mean, road elsewhere, a person in a corner:
    the answer depends on the pixels (and on the masked-out things), so a mix-up shows."""
    grey = image.astype(np.float64).mean(axis=2)
    m = np.where(grey > grey.mean(), 1, 2).astype(np.int32)
    m[:4, :4] = 3
    return m, [{"id": 1, "category_id": 187}, {"id": 2, "category_id": 149}, {"id": 3, "category_id": 1}], COCO


class WindowTeacher:
    def __init__(self, window: int):
        self.window, self.calls, self.images = window, [], 0

    def __call__(self, image):  # never used when `batch` exists
        raise AssertionError("asked image by image")

    def batch(self, images):
        self.calls.append(len(images))
        answers = answer_each(images, range(len(images)), lambda ims: [content_teacher(im) for im in ims])
        return [answers[i] for i in range(len(images))]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("teach") / "raw"
    assert main(["synth", str(raw), "--images", "7", "--classes", "demo", "--size", "64x80", "--quiet"]) == 0
    return raw


def _options(raw: Path, out: Path, **kw) -> PrepareOptions:
    return PrepareOptions("demo", out, things=[raw / "things"], stuff_from="teacher.pth", teacher_mask_things=True,
                          progress=False, **kw)


def test_windows_equal_one_by_one(raw, tmp_path):
    prepare(_options(raw, tmp_path / "one"), teacher=content_teacher, log=lambda m: None)
    one = files_of(tmp_path / "one")
    assert sum(name.startswith("panoptic/") for name in one) == 7
    for workers in (1, 2):
        teacher = WindowTeacher(3)
        out = tmp_path / f"win{workers}"
        prepare(_options(raw, out, workers=workers), teacher=teacher, log=lambda m: None)
        assert teacher.calls == [3, 3, 1]  # windows of 3 images, in image order
        assert files_of(out) == one


def test_teacher_only_asks_the_same_windows_and_writes_nothing(raw, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()  # rank 0's output: a helper neither checks nor touches it
    teacher = WindowTeacher(4)
    s = prepare(_options(raw, out, teacher_only=True), teacher=teacher, log=lambda m: None)
    assert teacher.calls == [4, 3] and s.images == {}
    assert list(out.iterdir()) == []
    with pytest.raises(Exception, match="batch"):
        prepare(_options(raw, tmp_path / "x", teacher_only=True), teacher=content_teacher, log=lambda m: None)


def test_answer_each_reports_images_that_cannot_load():
    class Images(list):
        def __getitem__(self, i):
            if i == 1:
                raise DataError("b.png: cannot decode image")
            return list.__getitem__(self, i)

    seen = []
    got = answer_each(Images(["a", "b", "c"]), [0, 1, 2], lambda ims: seen.append(ims) or [x.upper() for x in ims])
    assert seen == [["a", "c"]]  # one call, with the images that loaded
    assert got[0] == "A" and got[2] == "C" and isinstance(got[1], DataError)
