"""The teacher on windows of images: a teacher that labels several images at once.

A teacher is `teacher(image) -> answer` (see `options.Teacher`), asked image by image while
each image is built. A teacher may also have `batch(images) -> list of answers` and
`window` (how many images to hand it at a time): `prepare` then asks it ahead, one window
of the images it labels at a time, in image order, and builds those images with its
answers (`StuffLabeller.answers`). `commands/prepare.py` gives the CLI's teacher `batch`
on a GPU (a `Predictor` batching same-size images) and under torchrun (each process
labels a share of the window, rank 0 gathers the answers); on one CPU it has none, so
that nothing changes there.

`images` is a sequence read lazily: `images[i]` loads the image the teacher sees (HxWx3
uint8, things greyed out with `teacher_mask_things`) and raises its one-line
`PanopticDetrError` when it cannot be loaded; a teacher labelling a share of the window
reads only its share. `batch` returns, for every image, the answer or that error
(`answer_each` does it for a function of a list of images). The windows depend only on
the images and `window`, so every process of a run cuts the same ones.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

from panoptic_detr.data.prepare.item import Item
from panoptic_detr.data.prepare.paint import thing_masks
from panoptic_detr.errors import PanopticDetrError

__all__ = ["TeacherImages", "batches", "teacher_windows", "ask_window", "answer_each"]


def batches(teacher) -> bool:
    """Whether `teacher` labels windows of images (has `batch`)."""
    return teacher is not None and callable(getattr(teacher, "batch", None))


class TeacherImages(Sequence):
    """The images the teacher sees of `items`, each loaded when read."""

    def __init__(self, items: list[Item], labeller):
        self.items, self.labeller = items, labeller

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        it = self.items[i]
        masks = thing_masks(it, self.labeller.cats) if self.labeller.mask_things else []
        return self.labeller.teacher_image(it, masks)


def teacher_windows(items: list[Item], labeller) -> Iterator[list[int]]:
    """The indices of `items` cut into consecutive runs, each holding `teacher.window`
    images that the teacher labels (the last one fewer; a run may hold other images too)."""
    size = max(1, int(getattr(labeller.teacher, "window", 1)))
    run: list[int] = []
    asked = 0
    for k, it in enumerate(items):
        run.append(k)
        if labeller.mode(it) == "teacher":
            asked += 1
            if asked == size:
                yield run
                run, asked = [], 0
    if run:
        yield run


def ask_window(items: list[Item], labeller) -> dict[int, object]:
    """The teacher's answers for the images of `items` it labels: image id -> answer (or
    the error of loading the image)."""
    asked = [it for it in items if labeller.mode(it) == "teacher"]
    if not asked:
        return {}
    answers = list(labeller.teacher.batch(TeacherImages(asked, labeller)))
    if len(answers) != len(asked):
        raise PanopticDetrError(f"the teacher answered {len(answers)} of {len(asked)} images")
    return {it.image_id: a for it, a in zip(asked, answers)}


def answer_each(images: Sequence, indices: Iterable[int], label: Callable[[list], list]) -> dict[int, object]:
    """{i: answer} for `images[i]`, i in `indices`: the images loaded, then labelled by
    one call `label(list of images) -> list of answers`; an image that cannot be loaded
    answers with its PanopticDetrError."""
    out: dict[int, object] = {}
    loaded: list[tuple[int, object]] = []
    for i in indices:
        try:
            loaded.append((i, images[i]))
        except PanopticDetrError as e:
            out[i] = e
    if loaded:
        for (i, _), answer in zip(loaded, label([image for _, image in loaded])):
            out[i] = answer
    return out
