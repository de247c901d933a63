"""`panoptic-detr publish`: a model registry entry for a checkpoint, so a team can use it by name.

Prints the entry (file name with the SHA-256 prefix, as the official files have; the URL under
--url-base; preset, categories, inference defaults); `--copy-to DIR` writes the file under that
name, ready to upload; `--append FILE` adds the entry to a team registry (`$PANOPTIC_DETR_MODELS`
or `<cache>/models.yaml`).
"""

from __future__ import annotations

from pathlib import Path

HELP = "print (or append) a model-registry entry for a checkpoint, to use it by name"


def configure(p):
    p.add_argument("checkpoint", type=Path, help="the checkpoint (.pth / .safetensors)")
    p.add_argument("--name", required=True, help="the model's name, e.g. site-a-v3")
    p.add_argument("--url-base", required=True, help="where the file will be served, e.g. https://models.example.com/detr")
    p.add_argument("--description", default="", help="one line: what the model is")
    p.add_argument("--preset", default=None, help="architecture preset (needed when the file has no config)")
    p.add_argument("--threshold", type=float, default=None, help="predict's --threshold for this model")
    p.add_argument("--dedup", type=float, default=None, help="predict's --dedup for this model")
    p.add_argument("--short-side", type=int, default=None, help="predict's --short-side for this model")
    p.add_argument("--max-size", type=int, default=None, help="predict's --max-size for this model")
    p.add_argument("--copy-to", type=Path, default=None, help="write the file under its published name into DIR")
    p.add_argument("--append", type=Path, default=None, metavar="REGISTRY",
                   help="append the entry to this registry file (created if missing)")


def build_entry(args) -> tuple[str, dict]:
    """(published file name, entry) for `args.checkpoint`, checked by loading it."""
    import math

    from panoptic_detr.errors import PanopticDetrError
    from panoptic_detr.model.checkpoint import checkpoint_state_dict, load_model
    from panoptic_detr.model.checkpoint_io import load_checkpoint
    from panoptic_detr.utils.io import file_sha256

    path = args.checkpoint
    if not path.is_file():
        raise PanopticDetrError(f"{path}: checkpoint not found")
    ckpt = load_checkpoint(path)
    model = load_model(path, preset=args.preset)  # refuses a file that would not load by name
    sd = checkpoint_state_dict(ckpt)
    classes = model.config.num_classes
    if ckpt.get("categories"):
        categories = "checkpoint"
    elif classes in (250, 91):
        categories = "coco-panoptic" if classes == 250 else "coco-detection"
    else:
        raise PanopticDetrError(f"{path}: the file names no categories and has {classes} classes (not COCO's 250 or 91); "
                                f"re-save it with its categories (save_model)")
    if not isinstance(ckpt.get("config"), dict) and not args.preset:
        raise PanopticDetrError(f"{path}: the file has no config; give --preset (its architecture)")
    digest = file_sha256(path)
    file_name = f"{args.name}-{digest[:8]}{path.suffix}"
    entry = {"description": args.description or f"{args.name} ({'panoptic' if model.config.masks else 'detection'})",
             "url": f"{args.url_base.rstrip('/')}/{file_name}", "sha256": digest[:16]}
    if args.preset:
        entry["preset"] = args.preset
    entry.update(categories=categories, num_classes=classes)
    inference = {k: getattr(args, k) for k in ("threshold", "dedup", "short_side", "max_size") if getattr(args, k) is not None}
    if inference:
        entry["inference"] = inference
    entry["size_mb"] = round(sum(math.prod(v.shape) * v.element_size() for v in sd.values()) / 1e6, 1)
    return file_name, entry


def entry_text(name: str, entry: dict) -> str:
    import yaml

    return yaml.safe_dump({name: entry}, sort_keys=False, default_flow_style=None, width=1000)


def append_entry(registry: Path, name: str, entry: dict) -> None:
    """Add the entry at the end of `registry` (its comments kept), checked by re-reading it."""
    import textwrap

    import yaml

    from panoptic_detr.errors import ConfigError
    from panoptic_detr.model.registry import parse_entry
    from panoptic_detr.utils.io import write_text

    text = registry.read_text() if registry.is_file() else "# team model registry (panoptic-detr publish)\nformat: 1\nmodels:\n"
    data = yaml.safe_load(text) or {}
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict) and text.rstrip().splitlines()[-1].strip() != "models:":
        raise ConfigError(f"{registry}: not a model registry (no 'models:' mapping)")
    if isinstance(models, dict) and name in models:
        raise ConfigError(f"{registry}: model '{name}' is already there; pick another name (or edit the file)")
    new_text = text.rstrip("\n") + "\n" + textwrap.indent(entry_text(name, entry), "  ")
    models = yaml.safe_load(new_text).get("models") or {}
    if name not in models:
        raise ConfigError(f"{registry}: 'models:' is not the file's last section; add the entry by hand")
    for n, e in models.items():  # the result reads as a registry before it is written
        parse_entry(str(n), e, str(registry))
    write_text(registry, new_text)


def run(args):
    import shutil
    import sys

    from panoptic_detr.errors import PanopticDetrError
    from panoptic_detr.utils.io import atomic_path

    file_name, entry = build_entry(args)
    if args.copy_to is not None:
        dst = args.copy_to / file_name
        if dst.exists():
            raise PanopticDetrError(f"{dst}: exists already")
        with atomic_path(dst) as tmp:
            shutil.copyfile(args.checkpoint, tmp)
        print(f"wrote {dst}: upload it to {entry['url']}", file=sys.stderr)
    if args.append is not None:
        append_entry(args.append, args.name, entry)
        print(f"added '{args.name}' to {args.append}", file=sys.stderr)
    print(entry_text(args.name, entry), end="")
    return 0
