"""Shared by the explain tests: a tiny random model whose chosen queries fire, and a
synthetic image (a construction-like scene of flat regions and boxes)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from panoptic_detr.data.categories import Category, CategoryList, default_color

SHORT_SIDE = 160
FIRING = {2: 1, 5: 2, 9: 1, 13: 3, 17: 4}  # query -> class it is made to predict
THRESHOLD = 0.7


def categories() -> CategoryList:
    names = [("brick", True), ("pipe", True), ("sky", False), ("ground", False)]
    return CategoryList(Category(i, n, t, default_color(i)) for i, (n, t) in enumerate(names, 1))


def scene(height: int = 150, width: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float64)
    img[: height // 2] = (120, 170, 230)
    img[height // 2:] = (110, 90, 60)
    img[height // 5: height * 4 // 5, width // 5: width // 2] = (200, 60, 50)
    img[height // 3: height - 10, width * 2 // 3: width * 2 // 3 + 25] = (150, 150, 160)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_queries_fire(model, x: torch.Tensor, fire: dict[int, int], strength: float = 10.0) -> None:
    """Set `class_embed` so that on input `x` ([3, h, w], normalised) query q predicts class
    fire[q] with a score near 1 and every other query predicts "no object".

    The decoder outputs of a random model differ little between queries, so the weights
    are solved (least squares) on the centred outputs of this very input."""
    detr = getattr(model, "detr", model)
    seen = {}
    hook = detr.class_embed.register_forward_hook(lambda m, i, o: seen.setdefault("hs", i[0][-1, 0].detach()))
    with torch.no_grad():
        model(x[None], with_masks=False)
    hook.remove()
    hs = seen["hs"].double()  # [Q, d]
    Q, C1 = hs.shape[0], detr.class_embed.out_features
    target = torch.full((Q, C1), -strength, dtype=torch.float64)
    target[:, -1] = 0.0
    for q, c in fire.items():
        target[q, c] = strength
    mean = hs.mean(0)
    d = hs - mean
    w = torch.linalg.lstsq(d, target - target.mean(0)).solution  # [d, C+1]
    with torch.no_grad():
        detr.class_embed.weight.copy_(w.T.float())
        detr.class_embed.bias.copy_((target.mean(0) - mean @ w).float())


def firing_model():
    """A fresh tiny panoptic model (eval mode) whose FIRING queries fire on `scene()`."""
    from panoptic_detr import build_model
    from panoptic_detr.engine.predict import Predictor

    torch.manual_seed(0)
    model = build_model("tiny", categories=categories())
    x, _ = Predictor(model, threshold=THRESHOLD, short_side=SHORT_SIDE).preprocess(scene())
    make_queries_fire(model, x, FIRING)
    return model.eval()


@functools.lru_cache(maxsize=None)
def shared_model():
    """One `firing_model()` shared by the tests that only run it (do not modify it)."""
    return firing_model()


@functools.lru_cache(maxsize=None)
def explanation():
    """`explain_image` of the firing model on `scene()` (shared by the tests; do not modify)."""
    from panoptic_detr.engine.explain import explain_image
    from panoptic_detr.engine.predict import Predictor

    return explain_image(Predictor(shared_model(), threshold=THRESHOLD, short_side=SHORT_SIDE), scene())


def titles(fig) -> list[str]:
    """Every title of a figure: suptitles (of subfigures too) and axes titles."""
    out = []

    def walk(f):
        if getattr(f, "_suptitle", None) is not None:
            out.append(f._suptitle.get_text())
        for sub in getattr(f, "subfigs", []):
            walk(sub)

    walk(fig)
    out += [ax.get_title() for ax in fig.get_axes() if ax.get_title()]
    return out
