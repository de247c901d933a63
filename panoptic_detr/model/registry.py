"""The model registry: pretrained checkpoints by name, as data.

The shipped registry is `resources/models.yaml` (the official DETR checkpoints and their
Hugging Face conversions). A team adds its own names with a file of the same format:
`$PANOPTIC_DETR_MODELS` (one or more paths, separated by the OS path separator) or, when
that is unset, `<cache>/models.yaml` if it exists. Later files add entries; a name defined
twice is an error naming both files.

The cache folder is `$PANOPTIC_DETR_HOME`, else `~/.cache/panoptic-detr`; downloaded files go
to `<cache>/checkpoints/<file name>` (`model.download` fetches them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

from panoptic_detr.errors import ConfigError

__all__ = ["ModelEntry", "load_registry", "lookup", "cache_dir", "registry_files", "SHIPPED", "parse_entry"]

SHIPPED = Path(__file__).resolve().parent.parent / "resources" / "models.yaml"
_KEYS = {"description", "url", "hf", "sha256", "preset", "categories", "num_classes", "inference", "coco",
         "size_mb", "file_name"}
_CATEGORY_KINDS = {"coco-panoptic": 250, "coco-detection": 91}
_INFERENCE_KEYS = {"threshold", "short_side", "max_size", "dedup", "geometry"}  # model.inference_defaults


def cache_dir() -> Path:
    """`$PANOPTIC_DETR_HOME`, else `~/.cache/panoptic-detr` (not created here)."""
    home = os.environ.get("PANOPTIC_DETR_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "panoptic-detr"


def registry_files() -> list[Path]:
    """The shipped registry, then the team's: `$PANOPTIC_DETR_MODELS`, else `<cache>/models.yaml`."""
    env = os.environ.get("PANOPTIC_DETR_MODELS")
    if env:
        team = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
        for p in team:
            if not p.is_file():
                raise ConfigError(f"{p}: model registry not found ($PANOPTIC_DETR_MODELS)")
    else:
        default = cache_dir() / "models.yaml"
        team = [default] if default.is_file() else []
    return [SHIPPED, *team]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: str  # the registry file that defines it
    description: str = ""
    url: str | None = None
    hf: str | None = None  # a Hugging Face repo id, fetched with huggingface_hub
    sha256: str | None = None  # a prefix of the file's SHA-256 (hex)
    preset: str | None = None
    categories: object = None  # "coco-panoptic" | "coco-detection" | "checkpoint" | list of dicts | path
    num_classes: int | None = None
    inference: dict = field(default_factory=dict)
    coco: dict = field(default_factory=dict)
    size_mb: float | None = None
    file_name: str | None = None

    @property
    def cache_name(self) -> str:
        """The file name in the cache (the URL's last part, as the official names: hash included)."""
        if self.file_name:
            return self.file_name
        return Path(urlparse(self.url or "").path).name or f"{self.name}.pth"

    def category_list(self):
        """The CategoryList the registry gives for this model, or None (`checkpoint` / unset)."""
        from panoptic_detr.data.categories import CategoryList, official_categories

        c = self.categories
        if c in _CATEGORY_KINDS:
            return official_categories(_CATEGORY_KINDS[c])
        if c is None or c == "checkpoint":
            return None
        where = f"{self.source}: model '{self.name}': categories"
        if isinstance(c, str):
            import json

            path = Path(c) if Path(c).is_absolute() else Path(self.source).parent / c
            try:
                c = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"{where}: cannot read {path} ({e})") from None
        return CategoryList.from_json(c, where=where)


def parse_entry(name: str, data, source: str) -> ModelEntry:
    """One registry entry, checked (unknown keys, types, exactly one of url / hf)."""
    where = f"{source}: model '{name}'"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: an entry is a mapping (url, sha256, preset, categories, ...)")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    if bool(data.get("url")) == bool(data.get("hf")):
        raise ConfigError(f"{where}: give exactly one of 'url' and 'hf'")
    sha = data.get("sha256")
    if sha is not None:
        sha = str(sha).lower()
        if not sha or any(ch not in "0123456789abcdef" for ch in sha):
            raise ConfigError(f"{where}: sha256 must be hex digits, got '{data['sha256']}'")
    if data.get("url") and not sha:
        raise ConfigError(f"{where}: a 'url' entry needs its 'sha256' (at least the prefix in the file name)")
    inference = data.get("inference") or {}
    if not isinstance(inference, dict) or set(inference) - _INFERENCE_KEYS:
        raise ConfigError(f"{where}: inference takes {', '.join(sorted(_INFERENCE_KEYS))}")
    cats = data.get("categories")
    num_classes = data.get("num_classes")
    if cats in _CATEGORY_KINDS and num_classes not in (None, _CATEGORY_KINDS[cats]):
        raise ConfigError(f"{where}: categories {cats} has {_CATEGORY_KINDS[cats]} classes, not {num_classes}")
    return ModelEntry(
        name=name, source=source, description=str(data.get("description") or ""), url=data.get("url"),
        hf=data.get("hf"), sha256=sha, preset=data.get("preset"), categories=cats,
        num_classes=int(num_classes) if num_classes is not None else _CATEGORY_KINDS.get(cats),
        inference=dict(inference), coco=dict(data.get("coco") or {}), size_mb=data.get("size_mb"),
        file_name=data.get("file_name"))


def _read(path: Path) -> dict[str, ModelEntry]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read model registry ({e})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ConfigError(f"{path}: a model registry is a mapping with 'models: {{name: entry}}'")
    return {str(n): parse_entry(str(n), e, str(path)) for n, e in models.items()}


def load_registry() -> dict[str, ModelEntry]:
    """Every name: the shipped entries, then the team's."""
    out: dict[str, ModelEntry] = {}
    for path in registry_files():
        for name, entry in _read(path).items():
            if name in out:
                raise ConfigError(f"{path}: model '{name}' is already defined in {out[name].source}")
            out[name] = entry
    return out


def lookup(name: str) -> ModelEntry | None:
    """The registry entry called `name`, else None."""
    return load_registry().get(str(name))
