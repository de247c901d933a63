"""The seven explain figures of one image, and their captions.

`render_figures(expl, ...)` draws them from an `Explanation` (engine.explain; used here by
its attributes and methods only, so viz needs nothing from engine): the encoder
self-attention at reference points, the decoder attention per detected object, where the
queries look, the active queries, the mask head's attention maps, the binary masks with
the argmax, and the network diagram. `FIGURES` names each figure's file, heading and
caption; `captions(expl, ...)` fills the captions in for one explanation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from panoptic_detr.errors import PanopticDetrError

__all__ = ["FIGURES", "captions", "render_figures"]

# file name, heading, caption of each figure
FIGURES = {
    "encoder": ("1_encoder_attention.png", "1. Encoder self-attention",
                "For each reference point (marked with a letter), the self-attention of the encoder token under it "
                "(last encoder layer, averaged over the heads) over all tokens of the stride-{stride} feature grid "
                "({vh} x {vw} tokens; padding removed), drawn over the image's extent. Each map sums to 1. "
                "In a trained model the encoder already separates instances: the pixels of the same object light "
                "up together."),
    "decoder": ("2_decoder_attention.png", "2. Decoder attention per detected object",
                "For every query above the threshold {threshold:g} ({shown}), the cross-attention of its query over "
                "the image in the last decoder layer, averaged over the heads, with the predicted box (clipped to "
                "the image) and label.{dropped} "
                "In a trained model the decoder attends mostly to the object's extremities (head, legs, edges), "
                "which fix its box and class."),
    "queries": ("3_query_boxes.png", "3. Where the queries look",
                "Each panel is one query slot; each dot is the centre of the box it predicted on one of {n_images} "
                "image(s){query_source}. Colour (key under the panels): green for small boxes, blending into red for "
                "large wide boxes and blue for large tall ones. "
                "Slots specialise in regions and box sizes."),
    "active": ("4_active_queries.png", "4. Active queries",
               "All {num_queries} query slots on a grid; the ones whose best class is an object with a score above "
               "{threshold:g} fired and are linked to the object they found (hatched: dropped as a duplicate by "
               "--dedup; dotted: no segment left after the argmax; both drawn with dashed boxes). Grey level: the "
               "best object probability of the slots that did not fire."),
    "mask_attention": ("5_mask_attention.png", "5. Mask-head attention maps",
                       "For each kept object, the {nheads} attention maps of the multi-head attention module "
                       "(bbox_attention) between its decoder embedding and the encoder memory, at stride {stride}. "
                       "One softmax runs over heads and positions together, so each row sums to 1. These maps, "
                       "concatenated with the memory, are the input of the FPN mask head."),
    "masks": ("6_binary_masks.png", "6. Binary masks, argmax, panoptic result",
              "Top: the mask logits of each kept object, upsampled to the image and thresholded at "
              "sigmoid > 0.5 (they may overlap or leave holes). Bottom left: the pixel-wise argmax over the kept "
              "masks, which assigns every pixel to exactly one segment (stuff of one class merged, segments of "
              "{min_area} pixels or fewer dropped); it is the prediction's panoptic id map. Bottom right: the "
              "final panoptic segmentation over the image."),
    "diagram": ("7_network.png", "7. The network",
                "The architecture with the tensor shapes for this image's network input of {h} x {w} pixels "
                "(batch of one): backbone stages, 1x1 projection, flattening to {tokens} tokens with the sine "
                "positional encoding, encoder, decoder with the {num_queries} object queries, class and box "
                "heads, the mask head's attention maps and FPN, and the final pixel-wise argmax."),
}


def _reference_points(expl, points) -> tuple[list[tuple[float, float]], str]:
    """The points of figure 1 and how they were chosen (for the title)."""
    if points is not None:
        return list(points), "the chosen points"
    points = expl.auto_points()
    if points:
        return points, "points on the detected objects"
    H, W = expl.original_size  # nothing detected: the centres of the four quarters
    return [(W * fx, H * fy) for fy in (0.25, 0.75) for fx in (0.25, 0.75)], "four fixed points (nothing detected)"


def render_figures(
    expl,
    points: Sequence[tuple[float, float]] | None = None,
    query_stats=None,
    num_queries: int = 20,
    max_objects: int = 48,
) -> dict:
    """The seven figures (dict key -> matplotlib Figure; keys of `FIGURES`) of `expl`, an
    `engine.explain.Explanation`. Figure 3 uses `query_stats` (an
    `engine.explain.QueryBoxes`: its `boxes` [N, Q, 4]), or this image alone when None.
    Detection models (no mask head) get no figures 5 and 6."""
    from panoptic_detr.viz.attention import decoder_attention_figure, encoder_attention_figure
    from panoptic_detr.viz.diagram import network_diagram_figure, network_shapes
    from panoptic_detr.viz.masks import binary_masks_figure, mask_attention_figure
    from panoptic_detr.viz.queries import active_queries_figure, query_boxes_figure

    figs = {}
    extent = expl.grid_extent()
    cats = expl.categories
    points, what = _reference_points(expl, points)
    maps = [expl.encoder_map(x, y).numpy() for x, y in points]
    figs["encoder"] = encoder_attention_figure(
        expl.image, maps, points, extent=extent, stride=expl.stride,
        title=f"Encoder self-attention of {what} (last layer, mean over heads)")

    # best-scoring kept objects first
    order = expl.keep[expl.scores[expl.keep].argsort(descending=True)][:max_objects] if len(expl.keep) else expl.keep
    q_list = order.tolist()
    boxes = expl.boxes_xyxy(order, clip=True) if len(q_list) else np.zeros((0, 4))
    cids = [int(expl.labels[q]) for q in q_list]
    scs = [float(expl.scores[q]) for q in q_list]
    notes = [_STATE_NOTE.get(_state(expl, q), "") for q in q_list]
    figs["decoder"] = decoder_attention_figure(
        expl.image, [expl.decoder_map(q).numpy() for q in q_list], boxes, cids, scs, q_list, cats, extent=extent,
        notes=notes, title=f"Decoder cross-attention of {_shown(expl, max_objects)} (last layer, mean over heads)")

    query_box_sets = expl.boxes.numpy()[None] if query_stats is None else query_stats.boxes
    figs["queries"] = query_boxes_figure(query_box_sets, min(num_queries, expl.num_queries))

    figs["active"] = active_queries_figure(expl.image, expl.num_queries, expl.kept(), cats,
                                           query_scores=expl.object_scores.numpy(), threshold=expl.threshold)

    if expl.mask_attention is not None:
        att = np.stack([expl.mask_attention_maps(q).numpy() for q in q_list]) if q_list else np.zeros((0, 8, 1, 1))
        figs["mask_attention"] = mask_attention_figure(expl.image, att, boxes, cids, scs, q_list, cats,
                                                       extent=extent, stride=expl.stride)
    if expl.panoptic is not None:
        from panoptic_detr.viz.overlay import overlay

        all_q = expl.keep.tolist()
        ids = expl.panoptic.id_map_numpy()
        ov = overlay(expl.image, ids, expl.panoptic.segments_info, cats)
        figs["masks"] = binary_masks_figure(
            expl.image, expl.binary_masks(), [int(expl.labels[q]) for q in all_q],
            [float(expl.scores[q]) for q in all_q], all_q, ids, expl.panoptic.segments_info, ov, cats,
            notes=[_STATE_NOTE.get(_state(expl, q), "") for q in all_q])

    cfg = expl.config
    if cfg is None:
        raise PanopticDetrError("explain: the model has no .config; build it with build_model or load_model")
    named = len(cats) if cats is not None else None
    figs["diagram"] = network_diagram_figure(network_shapes(cfg, expl.processed_size, expl.original_size, named))
    return figs


_STATE_NOTE = {"duplicate": "dropped by --dedup", "small": "no segment"}


def _state(expl, q: int) -> str:
    return expl.states.state[q] if getattr(expl, "states", None) is not None else "kept"


def _shown(expl, max_objects: int) -> str:
    n = len(expl.keep)
    if n <= max_objects:
        return f"all {n} quer{'y' if n == 1 else 'ies'} above the threshold"
    return f"the {max_objects} best of the {n} queries above the threshold"


def _dropped(expl) -> str:
    """The caption's sentence on the queries above the threshold that have no segment."""
    out = []
    for state, one, many in (
        ("duplicate", "was dropped as a duplicate by --dedup (its mask lies inside a better query's of the same "
                      "class)", "were dropped as duplicates by --dedup (each one's mask lies inside a better "
                                "query's of the same class)"),
        ("small", "was left without a segment (too small, or no pixel won in the argmax)",
                  "were left without a segment (too small, or no pixel won in the argmax)"),
    ):
        qs = [q for q in expl.keep.tolist() if _state(expl, q) == state]
        if qs:
            out.append(f" Quer{'y' if len(qs) == 1 else 'ies'} {', '.join(map(str, qs))} "
                       f"{one if len(qs) == 1 else many}: marked in the panel titles.")
    return "".join(out)


def captions(expl, query_stats=None, query_source: str = "", max_objects: int = 48) -> dict:
    """key -> (file name, heading, caption) of every figure, filled in for `expl`."""
    cfg = expl.config
    vals = dict(
        shown=_shown(expl, max_objects).replace(" above the threshold", ""), dropped=_dropped(expl),
        stride=expl.stride, vh=expl.valid_size[0], vw=expl.valid_size[1], threshold=expl.threshold,
        n_images=1 if query_stats is None else query_stats.num_images, query_source=query_source,
        num_queries=expl.num_queries, nheads=getattr(cfg, "nheads", 8), min_area=4,
        h=expl.processed_size[0], w=expl.processed_size[1], tokens=expl.feature_size[0] * expl.feature_size[1],
    )
    return {k: (f, head, text.format(**vals)) for k, (f, head, text) in FIGURES.items()}
