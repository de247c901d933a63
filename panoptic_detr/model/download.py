"""From a model name to a file on disk: download once, verify, keep in the cache.

`resolve(name_or_path)` returns an existing path unchanged; a registry name
(`model.registry`) becomes its cached file, downloaded on first use with
`torch.hub.download_url_to_file` (a progress bar; written to `<file>.<random>.partial` and
renamed only once complete and its SHA-256 prefix checked, so an interrupted download never
leaves a complete-looking file, and a mismatching one is deleted). A file already in the
cache (or put there by hand) is checked against the prefix before it is used.
`$PANOPTIC_DETR_MIRROR` replaces the URL's folder with a team's own server.

Hugging Face names (`hf:` entries, or `hf:owner/repo` for any repo) go through
`huggingface_hub` (the `hub` extra) into the Hugging Face cache; `HF_HUB_OFFLINE=1` uses the
local cache only. The file is then read by `checkpoint_io` like any other: never unpickled.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from panoptic_detr.errors import CheckpointError
from panoptic_detr.model.registry import ModelEntry, cache_dir, lookup
from panoptic_detr.utils.io import file_sha256

__all__ = ["Resolved", "resolve", "fetch", "download_url", "cached_path", "is_cached"]

_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class Resolved:
    path: Path
    entry: ModelEntry | None  # the registry entry when a name was given


def cached_path(entry: ModelEntry) -> Path:
    """Where a URL entry's file lives in the cache."""
    return cache_dir() / "checkpoints" / entry.cache_name


def is_cached(entry: ModelEntry) -> bool:
    if entry.hf:
        return _hf_cached(entry) is not None
    return cached_path(entry).is_file()


def download_url(entry: ModelEntry) -> str:
    """The entry's URL, or the same file name under `$PANOPTIC_DETR_MIRROR` when it is set."""
    mirror = os.environ.get("PANOPTIC_DETR_MIRROR")
    if mirror:
        return mirror.rstrip("/") + "/" + entry.cache_name
    return str(entry.url)


def resolve(name_or_path, progress: bool = True) -> Resolved:
    """An existing file or folder as it is; a model name as its cached (downloaded) file."""
    path = Path(name_or_path)
    if path.exists():
        return Resolved(path, None)
    name = str(name_or_path)
    entry = lookup(name)
    if entry is None and name.startswith("hf:") and name.count("/") == 1:
        entry = ModelEntry(name=name, source="the Hugging Face Hub", hf=name[3:])
    if entry is None:
        if path.suffix.lower() in _WEIGHT_SUFFIXES:
            return Resolved(path, None)  # a missing file: checkpoint_io says so
        raise CheckpointError(f"{name}: neither a file nor a model name (`panoptic-detr models` lists the names; "
                              f"hf:OWNER/REPO fetches a Hugging Face repo)")
    return Resolved(fetch(entry, progress=progress), entry)


def fetch(entry: ModelEntry, progress: bool = True) -> Path:
    """The entry's file, downloaded into the cache first if needed."""
    if entry.hf:
        return _fetch_hf(entry)
    dst = cached_path(entry)
    if dst.is_file():
        _check_cached(entry, dst)
        return dst
    url = download_url(entry)
    dst.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {entry.name}: {url} -> {dst}", file=sys.stderr)
    import torch.hub

    try:
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=entry.sha256, progress=progress)
    except RuntimeError as e:
        if "invalid hash" not in str(e):
            raise
        raise CheckpointError(
            f"{entry.name}: {url}: {str(e).splitlines()[0]}, as {entry.source} requires (a cut connection or "
            f"another file); the download was refused and not kept") from None
    except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts, refused connections, bad URLs
        raise CheckpointError(_offline_message(entry, url, dst, e)) from None
    except Exception as e:  # http.client's IncompleteRead and kin (a connection cut halfway)
        if type(e).__module__ != "http.client":
            raise
        raise CheckpointError(_offline_message(entry, url, dst, e)) from None
    return dst


def _offline_message(entry: ModelEntry, url: str, dst: Path, err: Exception) -> str:
    reason = getattr(err, "reason", None) or err
    reason = str(reason).splitlines()[0] if str(reason) else type(err).__name__
    return (f"{entry.name}: cannot download {url} ({reason}); either download it by hand and pass its path "
            f"instead of the name, or put it at {dst} (a team mirror: set $PANOPTIC_DETR_MIRROR to its base URL)")


def _check_cached(entry: ModelEntry, path: Path) -> None:
    if not entry.sha256:
        return
    digest = file_sha256(path)
    if not digest.startswith(entry.sha256):
        raise CheckpointError(
            f"{path}: SHA-256 {digest[:16]}... does not start with {entry.sha256} as '{entry.name}' requires "
            f"({entry.source}); delete the file (it is not the registry's) and run again")


# --------------------------------------------------------------------------------------------
# Hugging Face


def _hf_options() -> dict:
    """Read at call time (huggingface_hub reads its environment once, at import)."""
    cache = os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return {"cache_dir": cache, "local_files_only": offline}


def _hf():
    try:
        import huggingface_hub
    except ImportError:
        raise CheckpointError("Hugging Face names need huggingface_hub: pip install 'panoptic-detr[hub]'") from None
    return huggingface_hub


def _hf_cached(entry: ModelEntry) -> Path | None:
    try:
        hub = _hf()
    except CheckpointError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = hub.try_to_load_from_cache(entry.hf, filename, cache_dir=_hf_options()["cache_dir"])
        if isinstance(found, str):
            return Path(found)
    return None


def _fetch_hf(entry: ModelEntry) -> Path:
    hub = _hf()
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    options = _hf_options()
    cached = _hf_cached(entry)
    if cached is not None:
        return cached
    last: Exception | None = None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return Path(hub.hf_hub_download(entry.hf, filename, **options))
        except Exception as e:  # offline, not cached, unknown repo, proxy: one line
            last = e
            if isinstance(e, LocalEntryNotFoundError) or not isinstance(e, EntryNotFoundError):
                break  # only "the repo has the other file" tries the next name
    reason = str(last).splitlines()[0] if last and str(last) else type(last).__name__
    where = options["cache_dir"] or "the Hugging Face cache"
    raise CheckpointError(
        f"{entry.name}: cannot fetch {entry.hf} from the Hugging Face Hub ({type(last).__name__}: {reason}); "
        f"either download its model.safetensors by hand and pass the file or folder, or fetch it into {where} "
        f"on a machine online (HF_ENDPOINT sets a mirror)")
