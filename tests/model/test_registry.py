"""Models by name: the registry, downloads into the cache, team registries, Hugging Face names.

Everything is served from 127.0.0.1 or built in a temporary folder: nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from official_detr_layout import detr_keys, detr_panoptic_keys
from registry_server import FileServer, small_official_checkpoint, write_registry, write_small_preset
from panoptic_detr.cli import main as cli_main
from panoptic_detr.data.categories import official_categories
from panoptic_detr.errors import CheckpointError, ConfigError
from panoptic_detr.model.checkpoint import infer_config, load_model
from panoptic_detr.model.config import ModelConfig
from panoptic_detr.model.download import cached_path, resolve
from panoptic_detr.model.registry import SHIPPED, load_registry, lookup

OFFICIAL_BASE = "https://dl.fbaipublicfiles.com/detr"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty cache folder; no mirror, no team registry from the environment."""
    h = tmp_path / "home"
    monkeypatch.setenv("PANOPTIC_DETR_HOME", str(h))
    for var in ("PANOPTIC_DETR_MIRROR", "PANOPTIC_DETR_MODELS"):
        monkeypatch.delenv(var, raising=False)
    return h


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    path, sha, sd = small_official_checkpoint(d / "coco-small.pth")
    return {"path": path, "sha": sha, "sd": sd, "preset": write_small_preset(d / "small.yaml")}


def photo(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def small_entry(small, url: str, sha: str | None = None) -> dict:
    return {"description": "small COCO-layout test model", "url": url, "sha256": sha or small["sha"][:8],
            "preset": str(small["preset"]), "categories": "coco-panoptic", "num_classes": 250}


def cache_files(home: Path) -> list[str]:
    folder = home / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------------------------
# The shipped registry


def test_every_shipped_entry_agrees_with_the_official_key_tables():
    entries = {n: e for n, e in load_registry().items() if e.source == str(SHIPPED)}
    official = [n for n, e in entries.items() if e.url]
    assert sorted(official) == sorted(["detr-r50", "detr-r50-dc5", "detr-r101", "detr-r101-dc5", "detr-r50-panoptic",
                                       "detr-r50-dc5-panoptic", "detr-r101-panoptic"])
    assert len(entries) == 14  # and their 7 Hugging Face conversions
    hf_twin = {"detr-resnet-50-panoptic": "detr-r50-panoptic", "detr-resnet-101-panoptic": "detr-r101-panoptic",
               "detr-resnet-50-dc5-panoptic": "detr-r50-dc5-panoptic", "detr-resnet-50": "detr-r50",
               "detr-resnet-101": "detr-r101", "detr-resnet-50-dc5": "detr-r50-dc5", "detr-resnet-101-dc5": "detr-r101-dc5"}
    for name, e in entries.items():
        base = name if e.url else hf_twin[e.hf.split("/")[1]]
        panoptic = base.endswith("-panoptic")
        backbone = "resnet101" if "r101" in base else "resnet50"
        classes = 250 if panoptic else 91
        table = detr_panoptic_keys(backbone, classes) if panoptic else detr_keys(backbone, classes)
        sd = {k: torch.empty(s, device="meta") for k, s in table.items()}
        cfg = ModelConfig.from_preset(e.preset)
        inferred = infer_config(sd, preset=e.preset)
        assert inferred == cfg, name  # the preset builds exactly the official keys and shapes
        assert cfg.dilation == ("dc5" in base), name
        assert e.num_classes == cfg.num_classes == classes, name
        cats = e.category_list()
        assert [(c.id, c.name, c.isthing) for c in cats] == [(c.id, c.name, c.isthing)
                                                             for c in official_categories(classes)], name
        assert math.isclose(e.size_mb, sum(math.prod(s) for s in table.values()) * 4 / 1e6, abs_tol=0.05), name
        assert ("PQ" in e.coco) == panoptic and "box AP" in e.coco, name
        if e.url:  # the official file name: <name>-<sha256 prefix>.pth
            assert e.url == f"{OFFICIAL_BASE}/{name}-{e.sha256}.pth" and len(e.sha256) == 8
        else:
            assert e.hf == name and e.hf.startswith("facebook/")
    assert entries["detr-r101-panoptic"].coco == {"PQ": 45.1, "box AP": 40.1}


def test_models_command_lists_every_name(home, capsys):
    assert cli_main(["models", "--all"]) == 0
    out = capsys.readouterr().out
    for name in load_registry():
        assert name in out
    assert "PQ 43.4" in out and str(home / "checkpoints") in out


# --------------------------------------------------------------------------------------------
# Downloads


def test_name_downloads_once_through_the_mirror_verifies_loads_and_predicts(home, small, tmp_path, monkeypatch):
    """An official-style entry (dl.fbaipublicfiles.com URL) fetched from a mirror on 127.0.0.1."""
    file_name = f"coco-small-{small['sha'][:8]}.pth"
    home.mkdir()
    write_registry(home / "models.yaml", {"coco-small": small_entry(small, f"{OFFICIAL_BASE}/{file_name}")})
    with FileServer({file_name: small["path"].read_bytes()}) as server:
        monkeypatch.setenv("PANOPTIC_DETR_MIRROR", server.url)
        first = resolve("coco-small", progress=False)
        assert first.path == home / "checkpoints" / file_name and server.hits == {file_name: 1}
        model = load_model("coco-small")  # strict
        assert server.hits == {file_name: 1}  # the second use reads the cache
        for k, v in model.state_dict().items():
            assert torch.equal(v, small["sd"][k]), k
        assert model.categories.by_id[1].name == "person" and model.config.num_queries == 5
        out = tmp_path / "pred"
        code = cli_main(["predict", "coco-small", str(photo(tmp_path / "site.jpg")), "--out", str(out),
                         "--threshold", "0", "--short-side", "48", "--no-overlay", "--quiet"])
    assert code == 0
    pred = json.loads((out / "predictions.json").read_text())
    names = {c["id"]: c["name"] for c in pred["categories"]}
    segments = pred["annotations"][0]["segments_info"]
    assert segments and all(names[s["category_id"]] == official_categories(250).by_id[s["category_id"]].name
                            for s in segments)
    assert len(names) == 133  # COCO panoptic's named categories


def test_team_registry_from_publish_resolves_the_same_way(home, tmp_path, monkeypatch, capsys):
    """publish -> upload (a folder served on 127.0.0.1) -> a name in $PANOPTIC_DETR_MODELS -> predict."""
    from panoptic_detr.data.categories import Category, CategoryList
    from panoptic_detr.model.build import build_model
    from panoptic_detr.model.checkpoint_io import save_model

    from registry_server import SMALL

    cats = CategoryList([Category(1, "rebar", True, (200, 0, 0)), Category(2, "slab", False, (0, 0, 200))])
    torch.manual_seed(1)
    model = build_model("tiny", categories=cats, **{**SMALL, "num_classes": cats.num_classes})
    with torch.no_grad():
        model.detr.class_embed.bias[0] = -20.0  # index 0 is no class (ids start at 1)
    ckpt = save_model(tmp_path / "site.safetensors", model, categories=cats)
    upload, registry = tmp_path / "upload", tmp_path / "team" / "models.yaml"
    upload.mkdir()
    with FileServer({}) as server:
        assert cli_main(["publish", str(ckpt), "--name", "site-a", "--url-base", server.url, "--threshold", "0",
                         "--copy-to", str(upload), "--append", str(registry)]) == 0
        printed = capsys.readouterr().out
        (published,) = upload.iterdir()
        assert published.name.startswith("site-a-") and published.name in printed
        server.files[published.name] = published.read_bytes()
        monkeypatch.setenv("PANOPTIC_DETR_MODELS", str(registry))
        entry = lookup("site-a")
        assert entry.url == f"{server.url}/{published.name}" and entry.categories == "checkpoint"
        out = tmp_path / "pred"
        args = ["predict", "site-a", str(photo(tmp_path / "p.jpg")), "--out", str(out), "--threshold", "0",
                "--short-side", "48", "--no-overlay", "--quiet"]
        assert cli_main(args) == 0
        # the registry's inference settings (publish --threshold 0) apply when predict gives none
        assert cli_main([*args[:3], "--out", str(tmp_path / "pred2"), *args[7:]]) == 0
        assert "inference: threshold 0," in capsys.readouterr().err
        assert json.loads((tmp_path / "pred2" / "predictions.json").read_text())["annotations"][0]["segments_info"]
        assert server.hits == {published.name: 1}
    pred = json.loads((out / "predictions.json").read_text())
    assert [c["name"] for c in pred["categories"]] == ["rebar", "slab"]
    assert {s["category_id"] for s in pred["annotations"][0]["segments_info"]} <= {1, 2}
    with pytest.raises(ConfigError, match="already there"):  # a name is published once
        from panoptic_detr.commands.publish import append_entry

        append_entry(registry, "site-a", entry.__dict__ | {"url": "x"})


def test_hash_mismatch_is_refused_and_nothing_is_kept(home, small, monkeypatch):
    home.mkdir()
    name = "coco-small-00000000.pth"
    write_registry(home / "models.yaml", {"bad": small_entry(small, f"{OFFICIAL_BASE}/{name}", sha="00000000")})
    with FileServer({name: small["path"].read_bytes()}) as server:
        monkeypatch.setenv("PANOPTIC_DETR_MIRROR", server.url)
        with pytest.raises(CheckpointError) as e:
            resolve("bad", progress=False)
    msg = str(e.value)
    assert "invalid hash" in msg and "refused" in msg and "\n" not in msg
    assert cache_files(home) == []


def test_a_hand_placed_file_is_checked_too(home, small):
    home.mkdir()
    write_registry(home / "models.yaml", {"coco-small": small_entry(small, f"{OFFICIAL_BASE}/coco-small-x.pth",
                                                                    sha="00000000")})
    dst = cached_path(lookup("coco-small"))
    dst.parent.mkdir(parents=True)
    dst.write_bytes(small["path"].read_bytes())
    with pytest.raises(CheckpointError, match="does not start with 00000000"):
        load_model("coco-small")


def test_unreachable_server_gives_the_one_line_offline_error(home, tmp_path, monkeypatch, capsys):
    mirror = f"http://127.0.0.1:{closed_port()}/detr"
    monkeypatch.setenv("PANOPTIC_DETR_MIRROR", mirror)
    code = cli_main(["predict", "detr-r50-panoptic", str(photo(tmp_path / "x.jpg")), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    dst = home / "checkpoints" / "detr-r50-panoptic-00ce5173.pth"
    assert err.startswith("error: detr-r50-panoptic: cannot download ")
    assert f"{mirror}/detr-r50-panoptic-00ce5173.pth" in err and "refused" in err.lower()
    assert "download it by hand and pass its path" in err and f"put it at {dst}" in err
    assert not dst.exists() and not (tmp_path / "o").exists()


def test_connection_cut_halfway_leaves_no_file(home, small, monkeypatch):
    home.mkdir()
    name = f"coco-small-{small['sha'][:8]}.pth"
    write_registry(home / "models.yaml", {"coco-small": small_entry(small, f"{OFFICIAL_BASE}/{name}")})
    with FileServer({name: small["path"].read_bytes()}) as server:
        server.mode = "cut"
        monkeypatch.setenv("PANOPTIC_DETR_MIRROR", server.url)
        with pytest.raises(CheckpointError) as e:
            resolve("coco-small", progress=False)
    # urllib returns the short body as the end of the file: the hash check refuses it
    assert "cut connection" in str(e.value) and "refused" in str(e.value) and "\n" not in str(e.value)
    assert cache_files(home) == []


def test_download_killed_halfway_leaves_no_complete_looking_file(home, small, monkeypatch):
    home.mkdir()
    name = f"coco-small-{small['sha'][:8]}.pth"
    write_registry(home / "models.yaml", {"coco-small": small_entry(small, f"{OFFICIAL_BASE}/{name}")})
    with FileServer({name: small["path"].read_bytes()}) as server:
        server.mode = "stall"
        env = {**os.environ, "PANOPTIC_DETR_MIRROR": server.url}
        child = subprocess.Popen([sys.executable, "-c", "from panoptic_detr.model.download import resolve; "
                                  "resolve('coco-small', progress=False)"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not any((home / "checkpoints").glob("*.partial")) or \
                    max(p.stat().st_size for p in (home / "checkpoints").glob("*.partial")) == 0:
                assert time.monotonic() < deadline and child.poll() is None
                time.sleep(0.05)
        finally:
            child.kill()
            child.wait()
        leftovers = cache_files(home)
        assert name not in leftovers and leftovers and all(n.endswith(".partial") for n in leftovers)
        server.mode = "ok"
        monkeypatch.setenv("PANOPTIC_DETR_MIRROR", server.url)
        assert load_model("coco-small").config.num_queries == 5  # the next run downloads it whole


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_served_under_a_name_is_refused_and_runs_nothing(home, tmp_path, monkeypatch, small):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"model": {"w": torch.zeros(2)}, "x": _RunsCode(marker)})
    import hashlib

    sha = hashlib.sha256(evil).hexdigest()[:8]
    home.mkdir()
    write_registry(home / "models.yaml", {"evil": small_entry(small, f"{OFFICIAL_BASE}/evil-{sha}.pth", sha=sha)})
    with FileServer({f"evil-{sha}.pth": evil}) as server:
        monkeypatch.setenv("PANOPTIC_DETR_MIRROR", server.url)
        with pytest.raises(CheckpointError, match="arbitrary unpickling.*refused"):
            load_model("evil")
    assert not marker.exists()


def test_unknown_name_and_team_registry_errors(home, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="neither a file nor a model name"):
        resolve("detr-r5O-panoptic")
    with pytest.raises(CheckpointError, match="file not found"):
        load_model(tmp_path / "missing.pth")
    monkeypatch.setenv("PANOPTIC_DETR_MODELS", str(write_registry(tmp_path / "r.yaml", {
        "detr-r50": {"url": "http://x/detr-r50-e632da11.pth", "sha256": "e632da11", "categories": "coco-detection"}})))
    with pytest.raises(ConfigError, match="'detr-r50' is already defined"):
        load_registry()
    write_registry(tmp_path / "r.yaml", {"x": {"url": "http://x/x.pth", "categories": "coco-detection"}})
    with pytest.raises(ConfigError, match="needs its 'sha256'"):
        load_registry()


# --------------------------------------------------------------------------------------------
# Hugging Face names


def _hf_cache_repo(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face cache entry as huggingface_hub lays it out (refs/main -> snapshots/<commit>/)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)
    return snap


def test_hugging_face_names_resolve_from_a_local_cache_offline(home, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("huggingface_hub")
    from safetensors.torch import save

    torch.manual_seed(0)
    backbone = transformers.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                                         out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = transformers.DetrConfig(use_timm_backbone=False, backbone_config=backbone, d_model=128, encoder_layers=1,
                                  decoder_layers=1, encoder_ffn_dim=128, decoder_ffn_dim=128, num_queries=6,
                                  num_labels=250, use_pretrained_backbone=False)
    hf = transformers.DetrForSegmentation(cfg).eval()
    data = save({k: v.contiguous() for k, v in hf.state_dict().items()})
    cache = tmp_path / "hf-cache"
    snap = _hf_cache_repo(cache, "test-org/detr-small-panoptic", {"model.safetensors": data})
    official = _hf_cache_repo(cache, "facebook/detr-resnet-50-panoptic", {"model.safetensors": data})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    model = load_model("hf:test-org/detr-small-panoptic")  # through hf_import's converter
    direct = load_model(snap)
    assert model.config.backbone == "resnet18" and model.config.num_queries == 6 and model.config.masks
    for k, v in direct.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert model.categories.by_id[1].name == "person"

    r = resolve("facebook/detr-resnet-50-panoptic")  # a shipped name: its file in the HF cache
    assert r.path == official / "model.safetensors" and r.entry.preset == "r50-panoptic"
    with pytest.raises(CheckpointError) as e:  # offline and not cached: one line
        resolve("facebook/detr-resnet-101-panoptic")
    assert "cannot fetch facebook/detr-resnet-101-panoptic" in str(e.value) and "\n" not in str(e.value)
