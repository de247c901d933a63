"""`panoptic-detr explain`: the figures that show how DETR sees one image, index.html and
the interactive explorer.html."""

from pathlib import Path

HELP = ("figures that explain a prediction: attention maps, queries, masks, network diagram (PNGs + index.html) "
        "and explorer.html, one interactive page (every pixel, query, layer and head)")


def parse_point(text: str) -> tuple[float, float]:
    import argparse

    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a point; expected x,y in image pixels, e.g. 320,240") from None
    return x, y


def configure(p):
    from panoptic_detr.commands import add_inference_arguments

    p.add_argument("checkpoint", type=Path, help="panoptic model checkpoint (.pth or .safetensors)")
    p.add_argument("image", type=Path, help="the image to explain")
    p.add_argument("--out", type=Path, required=True, help="output folder (figures *.png, index.html, explorer.html)")
    p.add_argument("--points", nargs="+", type=parse_point, metavar="X,Y",
                   help="reference points for the encoder self-attention figure, in original image pixels "
                        "(default: a point on each detected object)")
    p.add_argument("--queries", type=int, default=20, help="query slots shown in the 'where the queries look' "
                                                           "figure (default 20)")
    add_inference_arguments(p)
    p.add_argument("--query-images", type=Path, metavar="DATA",
                   help="images for the 'where the queries look' figure: a folder or a prepared dataset "
                        "(default: the image's folder)")
    p.add_argument("--split", default="val", help="split of a prepared dataset given to --query-images (default val)")
    p.add_argument("--max-images", type=int, default=8, help="images used for that figure, at half the short side "
                                                           "(default 8; crops of the image fill in when fewer)")
    p.add_argument("--dpi", type=int, default=110, help="resolution of the PNG figures (default 110)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    g = p.add_argument_group("explorer.html (the interactive page)")
    g.add_argument("--no-explorer", action="store_true", help="write the figures and index.html only")
    g.add_argument("--explorer-heads", choices=("last", "all"), default="last",
                   help="encoder layers stored per head (every layer is stored averaged over the heads): "
                        "last (default) or all (about 6x the encoder's share of the file)")
    g.add_argument("--explorer-queries", choices=("kept", "all"), default="kept",
                   help="queries stored at every decoder layer and head: kept (default) or all "
                        "(the others get the last layer's mean)")
    g.add_argument("--explorer-query-boxes", type=Path, metavar="DIR",
                   help="an explain-queries output (folder or query_boxes.npz): the explorer shows every "
                        "query slot's boxes over its images (default: the images of figure 3)")


def run(args):
    from panoptic_detr.commands import build_predictor
    from panoptic_detr.commands._explain_output import explain_to_folder
    from panoptic_detr.commands.explain_queries import check_common, load
    from panoptic_detr.errors import PanopticDetrError
    from panoptic_detr.viz.explorer_data import ExplorerOptions

    check_common(args)
    if args.max_images < 1:
        raise PanopticDetrError(f"--max-images must be at least 1, got {args.max_images}")
    if args.image.is_dir():
        raise PanopticDetrError(f"{args.image}: is a folder; explain takes one image (explain-queries takes folders)")
    if not args.image.is_file():
        raise PanopticDetrError(f"{args.image}: image not found")
    predictor = build_predictor(load(args, need_masks=True), args)
    index = explain_to_folder(
        predictor, args.image, args.out, points=args.points, num_queries=args.queries,
        query_images=args.query_images, split=args.split, max_images=args.max_images, overwrite=args.overwrite,
        source=str(args.checkpoint), dpi=args.dpi, explorer_query_boxes=args.explorer_query_boxes,
        explorer=False if args.no_explorer else ExplorerOptions(args.explorer_heads, args.explorer_queries),
    )
    print(index)
    return 0
