"""The `panoptic-detr` subcommands: one module each, with `HELP`, `configure(parser)` and `run(args)`."""

DEDUP_HELP = (
    "drop a thing segment when more than this fraction of its mask lies inside a better-scoring "
    "segment of the same class (duplicate suppression, e.g. 0.5; default: off, as the official DETR)"
)


def add_dedup_argument(parser, flag: str = "--dedup") -> None:
    """The duplicate-suppression option shared by predict, evaluate, explain and prepare."""
    parser.add_argument(flag, type=float, default=None, metavar="F", help=DEDUP_HELP)
