"""`panoptic-detr models`: the pretrained models by name (`model.registry`), and which are cached."""

from __future__ import annotations

HELP = "list the pretrained models available by name (official DETR, Hugging Face, your team's)"


def configure(p):
    p.add_argument("--all", action="store_true", help="also list the Hugging Face names")


def _numbers(coco: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in coco.items()) or "-"


def run(args):
    from panoptic_detr.model.download import is_cached
    from panoptic_detr.model.registry import SHIPPED, cache_dir, load_registry, registry_files

    entries = load_registry()
    rows = [("name", "what", "size", "COCO val", "cached")]
    for name, e in entries.items():
        if e.hf and not args.all and e.source == str(SHIPPED):
            continue
        size = f"{e.size_mb:.0f} MB" if e.size_mb else "?"
        rows.append((name, e.description or (e.url or f"hf:{e.hf}"), size, _numbers(e.coco),
                     "yes" if is_cached(e) else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    team = [str(p) for p in registry_files()[1:]]
    print(f"\ncache: {cache_dir() / 'checkpoints'} ($PANOPTIC_DETR_HOME); "
          f"team registry: {', '.join(team) or 'none'} ($PANOPTIC_DETR_MODELS or {cache_dir() / 'models.yaml'})")
    if not args.all:
        print("--all also lists the Hugging Face names (e.g. facebook/detr-resnet-50-panoptic; needs huggingface_hub)")
    print("use a name wherever a checkpoint goes: panoptic-detr predict detr-r50-panoptic photo.jpg --out pred")
    return 0
