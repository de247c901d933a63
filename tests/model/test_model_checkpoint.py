"""Safe checkpoint reading, clear errors, saving, class-count adaptation."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

from panoptic_detr.data.categories import Category, CategoryList
from panoptic_detr.errors import CheckpointError
from panoptic_detr.model.build import build_model
from panoptic_detr.model.checkpoint import (adapt_state_dict, load_checkpoint, load_model,
                                             load_state_dict_checked, save_model)


class _RunsCode:
    """Unpickling this runs a shell command (creates a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def cats(*names):
    return CategoryList(Category(i + 1, n, True, (i, i, i)) for i, n in enumerate(names))


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model("tiny", categories=cats("brick", "pipe", "sand"))


def assert_same_weights(a, b, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if not k.startswith(skip):
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"model": {"w": torch.zeros(2)}, "x": _RunsCode(marker)}
    if legacy:
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and "arbitrary unpickling" in msg and "refused" in msg and "\n" not in msg
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists()


def test_cli_reports_a_refused_checkpoint_without_traceback(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "x": _RunsCode(marker)}, path)
    r = subprocess.run([sys.executable, "-m", "panoptic_detr", "model-info", "--checkpoint", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "refused" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


def test_unreadable_files_give_clear_errors(tmp_path, tiny_model):
    good = save_model(tmp_path / "good.pth", tiny_model)
    data = good.read_bytes()
    cases = {
        "truncated.pth": data[: len(data) // 2],
        "text.pth": b"this is not a checkpoint\n",
        "empty.pth": b"",
        "truncated.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1",
        "list.pth": None,
    }
    for name, content in cases.items():
        p = tmp_path / name
        if content is None:
            torch.save([torch.zeros(1)], p)
        else:
            p.write_bytes(content)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(p)
        assert str(p) in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "truncated.pth")
    with pytest.raises(CheckpointError, match="file not found"):
        load_model(tmp_path / "missing.pth")


def test_pth_round_trip_with_config_categories_and_extra(tmp_path, tiny_model):
    path = save_model(tmp_path / "m.pth", tiny_model, extra={"epoch": 3, "note": "x"})
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]  # atomic: no temporary left
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "config", "categories", "epoch", "note"}
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3
    loaded = load_model(path)
    assert loaded.config == tiny_model.config
    assert loaded.categories.names() == ["brick", "pipe", "sand"]
    assert_same_weights(loaded, tiny_model)


def test_safetensors_round_trip_and_half(tmp_path, tiny_model):
    path = save_model(tmp_path / "m.safetensors", tiny_model)
    loaded = load_model(path)
    assert loaded.config == tiny_model.config and loaded.categories.names() == ["brick", "pipe", "sand"]
    assert_same_weights(loaded, tiny_model)
    half = load_model(save_model(tmp_path / "h.safetensors", tiny_model, half=True))
    assert (tmp_path / "h.safetensors").stat().st_size < 0.6 * path.stat().st_size
    w, h = tiny_model.state_dict(), half.state_dict()
    assert all(h[k].dtype == torch.float32 for k in h if w[k].is_floating_point())
    assert max((w[k] - h[k]).abs().max().item() for k in w if w[k].is_floating_point()) < 1e-2


def test_new_class_count_reinitialises_the_class_head(tmp_path, tiny_model):
    path = save_model(tmp_path / "m.pth", tiny_model)
    old_w = tiny_model.detr.class_embed.weight
    old_b = tiny_model.detr.class_embed.bias
    new_cats = CategoryList([Category(1, "sand", False, (1, 1, 1)), Category(2, "rebar", True, (2, 2, 2)),
                             Category(3, "brick", True, (3, 3, 3))])
    m = load_model(path, categories=new_cats)
    assert m.config.num_classes == 4 and m.categories is new_cats
    w, b = m.detr.class_embed.weight, m.detr.class_embed.bias
    assert w.shape == (5, 128)
    assert torch.equal(w[1], old_w[3]) and torch.equal(b[1], old_b[3])  # sand kept by name
    assert torch.equal(w[3], old_w[1]) and torch.equal(b[3], old_b[1])  # brick kept by name
    assert torch.equal(w[4], old_w[-1]) and torch.equal(b[4], old_b[-1])  # no-object row
    assert not torch.equal(w[2], old_w[2])  # rebar is new
    assert_same_weights(m, tiny_model, skip=("detr.class_embed",))
    # Without names, only the no-object row survives.
    m7 = load_model(path, num_classes=7)
    assert m7.detr.class_embed.weight.shape == (8, 128) and m7.categories is None
    assert torch.equal(m7.detr.class_embed.weight[-1], old_w[-1])


def test_adapt_state_dict_alone():
    sd = {"class_embed.weight": torch.arange(12.0).view(4, 3), "class_embed.bias": torch.arange(4.0),
          "other": torch.ones(1)}
    out = adapt_state_dict(sd, 5, cats("a", "b"), cats("b", "x", "a", "y"))
    assert out["class_embed.weight"].shape == (6, 3)
    assert torch.equal(out["class_embed.weight"][1], sd["class_embed.weight"][2])  # b: 2 -> 1
    assert torch.equal(out["class_embed.weight"][3], sd["class_embed.weight"][1])  # a: 1 -> 3
    assert torch.equal(out["class_embed.weight"][5], sd["class_embed.weight"][3])  # no object
    assert out["other"] is sd["other"] and sd["class_embed.weight"].shape == (4, 3)


def test_detection_checkpoint_initialises_a_panoptic_model(tmp_path):
    torch.manual_seed(1)
    det = build_model("tiny", masks=False)
    # An official-style file: state dict only, no config.
    torch.save({"model": det.state_dict()}, tmp_path / "det.pth")
    pan = load_model(tmp_path / "det.pth", preset="tiny")
    assert pan.config.masks and hasattr(pan, "mask_head")
    sd = pan.state_dict()
    for k, v in det.state_dict().items():
        assert torch.equal(sd[f"detr.{k}"], v), k
    assert pan.mask_head.lay1.weight.shape == (136, 136, 3, 3)  # freshly initialised
    with torch.no_grad():
        out = pan([torch.randn(3, 64, 64)])
    assert out["pred_masks"].shape == (1, 20, 16, 16)
    # The DETR part of a panoptic checkpoint also loads alone, as a detection model.
    save_model(tmp_path / "pan.pth", pan)
    det2 = load_model(tmp_path / "pan.pth", preset="r50")
    assert not det2.config.masks
    assert_same_weights(det2, det)


def test_strict_loading_reports_everything_in_one_line(tmp_path, tiny_model):
    sd = dict(tiny_model.state_dict())
    removed = [k for k in sd if k.startswith("detr.transformer.encoder.layers.0.")]
    for k in removed:
        del sd[k]
    sd["detr.unknown.weight"] = torch.zeros(1)
    sd["mask_head.lay5.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save({"model": sd, "config": tiny_model.config.to_dict()}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "bad.pth")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "bad.pth") in msg
    assert f"{len(removed)} missing key(s)" in msg and "more)" in msg
    assert "1 unexpected key(s): detr.unknown.weight" in msg
    assert "mask_head.lay5.weight (checkpoint [3, 3, 3, 3], model [8, 16, 3, 3])" in msg
    partial = load_model(tmp_path / "bad.pth", strict=False)
    assert torch.equal(partial.mask_head.lay4.weight, tiny_model.mask_head.lay4.weight)


def test_class_count_mismatch_hint(tmp_path, tiny_model):
    # A saved config describes the weights: a preset then only picks the head type.
    path = save_model(tmp_path / "m.pth", tiny_model)
    assert load_model(path, preset="r50-panoptic").config == tiny_model.config
    # Without a config, the preset gives the architecture and the file its class count.
    torch.save({"model": tiny_model.state_dict()}, tmp_path / "noconfig.pth")
    assert load_model(tmp_path / "noconfig.pth", preset="tiny").config.num_classes == 4
    # Loading into a model with another class count names the way out.
    with pytest.raises(CheckpointError, match="pass num_classes"):
        load_state_dict_checked(build_model("tiny"), tiny_model.state_dict(), where="m.pth")


def test_narrow_backbone_width_is_inferred_from_an_unconfigured_state_dict(tmp_path):
    import torch

    from panoptic_detr import build_model, load_model

    model = build_model("tiny", num_classes=7)
    assert model.config.backbone_width == 48
    assert model.detr.backbone[0].channels == [48, 96, 192, 384]
    path = tmp_path / "bare.pth"
    torch.save({"model": model.state_dict()}, path)  # no config: the shapes must tell
    again = load_model(path)
    assert again.config.backbone_width == 48 and again.config.num_classes == 7
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


@pytest.mark.parametrize("kind", ["detection-safetensors", "ddp-panoptic-pth"])
def test_init_from_checkpoint_and_load_model_give_the_same_weights(tmp_path, kind):
    """The trainer's --init and load_model go through one loading path (`load_weights`)."""
    from panoptic_detr.engine.train import init_from_checkpoint
    from panoptic_detr.model.build import build_from_config

    torch.manual_seed(2)
    if kind == "detection-safetensors":  # re-keyed under detr., fresh mask head, class rows moved by name
        src = build_model("tiny", categories=cats("pipe", "brick", "gravel"), masks=False)
        path = save_model(tmp_path / "det.safetensors", src)
    else:  # saved from a DistributedDataParallel wrapper, no config nor categories
        src = build_model("tiny", num_classes=4)
        path = tmp_path / "ddp.pth"
        torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    new = cats("brick", "sand", "pipe")
    torch.manual_seed(7)
    loaded = load_model(path, preset="tiny", categories=new)
    torch.manual_seed(7)
    model = build_from_config(loaded.config)
    logs = []
    init_from_checkpoint(model, str(path), new, log=logs.append)
    assert_same_weights(model.eval(), loaded)
    sd, src_sd = loaded.state_dict(), src.state_dict()
    if kind == "detection-safetensors":
        assert logs == [f"init: weights from {path}; class head adapted 4 -> 4 classes (2 carried over by name, 1 fresh); "
                        "mask head starts fresh"]
        assert torch.equal(sd["detr.class_embed.weight"][1], src_sd["class_embed.weight"][2])  # brick
        assert torch.equal(sd["detr.class_embed.weight"][3], src_sd["class_embed.weight"][1])  # pipe
        assert torch.equal(sd["detr.transformer.decoder.layers.0.linear1.weight"],
                           src_sd["transformer.decoder.layers.0.linear1.weight"])
    else:
        assert logs == [f"init: weights from {path}; class head kept (4 classes)"]
        assert_same_weights(loaded, src)


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    """A mistyped path pointing at some other binary (an image, a zip part, random
    bytes) was refused as "needs arbitrary unpickling", as if it were a dangerous
    pickle: it is simply not a checkpoint."""
    import random

    rng = random.Random(0)
    for i in range(5):
        p = tmp_path / f"random{i}.pth"
        p.write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
        if p.read_bytes()[:1] == b"\x80":
            continue
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(p)
        assert str(e.value) == f"{p}: not a checkpoint (neither a PyTorch file nor safetensors: unrecognised file format)"
    import argparse

    pickled = tmp_path / "object.pth"
    torch.save({"parser": argparse.ArgumentParser}, pickled)  # a real pickle of a class: still refused as such
    with pytest.raises(CheckpointError, match="needs arbitrary unpickling .it refers to argparse.ArgumentParser"):
        load_checkpoint(pickled)
