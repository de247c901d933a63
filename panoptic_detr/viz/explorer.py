"""`explorer.html`: one self-contained interactive page of an explanation.

The page (template, style and script in `panoptic_detr/resources/explorer.*`) embeds the
image, the data packed by `viz.explorer_data.pack_explorer` and plain JavaScript: no
library, no network access, so it works from `file://` and when mailed on its own. Views:
the encoder self-attention of the token under the pointer (layer, head or mean, both
directions), every query with its state and, for the selected one, its cross-attention,
box, mask-head maps and mask; the panoptic result (hover, click to select the query); the
query slots on this image and, when given, over a set of images.
"""

from __future__ import annotations

import html
import json
import os
from importlib import resources
from pathlib import Path
from typing import Sequence

__all__ = ["EXPLORER_FILE", "render_explorer", "write_explorer", "size_report"]

EXPLORER_FILE = "explorer.html"

# what each blob holds, for the size report
_PARTS = {
    "enc_": "encoder attention",
    "dec_": "decoder attention",
    "mask_att": "mask-head maps",
    "mask_logits": "masks",
    "id_map": "panoptic map",
    "dataset_": "query slots over the images",
}


def _resource(name: str) -> str:
    return resources.files("panoptic_detr").joinpath("resources", name).read_text(encoding="utf-8")


def _script_json(obj) -> str:
    """JSON safe inside a <script> element (no `</` can close it)."""
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


def render_explorer(meta: dict, blobs: dict, title: str = "How DETR sees this image",
                    links: Sequence[tuple[str, str]] = (), summary: str = "") -> str:
    """The page's HTML for packed data (`pack_explorer`); `links`: (relative href, text)
    of the static figures and pages to link to."""
    e = html.escape
    words = meta.get("state_words", {})
    dataset = meta.get("dataset")
    dataset_note = ""
    if dataset:
        dataset_note = (f" Below: each slot's box centres over {dataset['images']} image(s){e(dataset['source'])}; "
                        "click a slot to select its query.")
    return _resource("explorer.html").format(
        title=e(title), style=_resource("explorer.css"), summary=e(summary),
        links="".join(f'<a href="{e(href, quote=True)}">{e(text)}</a>' for href, text in links),
        vh=meta["valid_size"][0], vw=meta["valid_size"][1], stride=meta["stride"],
        states="; ".join(f"{e(k)}: {e(v)}" for k, v in words.items()), num_queries=meta["num_queries"],
        dataset_note=dataset_note, meta=_script_json(meta), blobs=_script_json(blobs),
        script=_resource("explorer.js").replace("</", "<\\/"),
    )


def size_report(meta: dict, blobs: dict, total: int) -> str:
    """One line: the page's size and what takes it."""
    parts: dict[str, int] = {}
    for name, blob in blobs.items():
        part = next((v for k, v in _PARTS.items() if name.startswith(k)), name)
        parts[part] = parts.get(part, 0) + len(blob["data"])
    parts["image"] = len(meta.get("image", ""))
    mb = lambda n: f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"  # noqa: E731
    detail = ", ".join(f"{k} {mb(v)}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
    layers = meta["encoder_head_layers"]
    heads = ("every encoder layer" if len(layers) == meta["encoder_layers"] else f"encoder layer {layers[-1] + 1}")
    stored = len(meta["stored_queries"])
    return (f"{mb(total)} ({detail}); per head: {heads} and {stored} quer{'y' if stored == 1 else 'ies'} "
            f"at every decoder layer; attention as 8 bits per value, error <= 1/510 of each map's peak")


def write_explorer(path: str | os.PathLike, expl, options=None, query_stats=None, query_source: str = "",
                   links: Sequence[tuple[str, str]] = (), source: str = "") -> tuple[Path, str]:
    """Pack `expl` (an `engine.explain.Explanation` with per-layer attention) and write the
    page to `path` atomically. Returns (path, a one-line size report)."""
    from panoptic_detr.utils.io import atomic_path
    from panoptic_detr.viz.explorer_data import pack_explorer

    meta, blobs = pack_explorer(expl, options, query_stats, query_source)
    meta["state_words"] = dict(getattr(expl.states, "WORDS", {}))
    H, W = expl.original_size
    kept = len(meta["keep"])
    summary = (f"{source + ': ' if source else ''}{W} x {H} image (network input {meta['processed_size'][1]} x "
               f"{meta['processed_size'][0]}), {kept} of {meta['num_queries']} queries above the threshold "
               f"{meta['threshold']:g}. Attention is stored as 8 bits per value with one scale per map: every value "
               "is within 1/510 of its map's peak.")
    page = render_explorer(meta, blobs, links=links, summary=summary)
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return path, size_report(meta, blobs, len(page.encode("utf-8")))
