"""Inference settings that travel with the model: `model.inference_defaults`.

Real-world case: the tiny models need threshold 0.4, dedup 0.5 and short side 288, and a
user who ran `predict model.pth photos/` with the official defaults (0.85, off, 800) got
badly fragmented maps, because those settings lived only in MODEL_CARD.md. A checkpoint
now carries them; predict / evaluate / explain / prepare's teacher use them unless a flag
overrides, and print the values used. Official checkpoints get the official defaults.
"""

import argparse
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import panoptic_detr
from panoptic_detr.cli import build_parser, main
from panoptic_detr.data.categories import Category, CategoryList
from panoptic_detr.data.formats.coco_panoptic import rgb2id
from panoptic_detr.engine.predict import Predictor
from panoptic_detr.errors import CheckpointError, PanopticDetrError
from panoptic_detr.model.checkpoint import load_checkpoint, save_model
from panoptic_detr.model.inference_defaults import OFFICIAL, InferenceDefaults, from_checkpoint

CATS = CategoryList([Category(1, "crate", True, (1, 2, 3)), Category(2, "cone", True, (4, 5, 6)),
                     Category(3, "sky", False, (7, 8, 9)), Category(4, "ground", False, (10, 11, 12))])
CARRIED = InferenceDefaults(threshold=0.3, dedup=0.0, short_side=64, max_size=100, geometry="official")
BASE_MODEL = Path(panoptic_detr.__file__).parent / "weights" / "base-tiny.safetensors"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = panoptic_detr.build_model("tiny", categories=CATS)
    with torch.no_grad():  # most queries kept at low thresholds, few at high ones
        m.detr.class_embed.bias.copy_(torch.tensor([-20.0, 1.0, 0.5, 1.5, 1.2, 0.0]))
    return m


@pytest.fixture(scope="module")
def carrying(model, tmp_path_factory):
    """A checkpoint written by this project with inference settings (as training writes them)."""
    return save_model(tmp_path_factory.mktemp("ckpt") / "carrying.safetensors", model, inference=CARRIED)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (6, 9, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(small).resize((90, 61), Image.BILINEAR).save(path)
    return path


def read_ids(path):
    with Image.open(path) as im:
        return rgb2id(np.asarray(im.convert("RGB")))


# --------------------------------------------------------------------------- the rules
def test_which_defaults_a_checkpoint_gets(model, carrying, tmp_path):
    assert from_checkpoint({"model": {}, "inference": CARRIED.to_dict()}) == CARRIED
    assert from_checkpoint({"model": {}}) == OFFICIAL  # made elsewhere: official settings
    assert OFFICIAL == InferenceDefaults(0.85, None, 800, 1333, "official")
    assert from_checkpoint({"model": {}, "config": {}}) == InferenceDefaults(0.85, None, 800, 1333, "aligned")
    partial = from_checkpoint({"model": {}, "config": {}, "inference": {"threshold": 0.5}})
    assert partial == InferenceDefaults(threshold=0.5)
    # the registry's settings over an official file: the rest stays official
    assert from_checkpoint({"model": {}, "inference": {"short_side": 640}}) == OFFICIAL.replace(short_side=640)

    assert panoptic_detr.load_model(carrying).inference_defaults == CARRIED
    pth = save_model(tmp_path / "m.pth", model, inference=CARRIED)
    assert load_checkpoint(pth)["inference"] == CARRIED.to_dict()
    assert panoptic_detr.load_model(pth).inference_defaults == CARRIED
    # trained here before checkpoints carried settings: aligned, the built-in values
    plain = save_model(tmp_path / "plain.pth", model)
    assert panoptic_detr.load_model(plain).inference_defaults == InferenceDefaults()
    # re-saving a loaded model keeps its settings
    again = save_model(tmp_path / "again.safetensors", panoptic_detr.load_model(carrying))
    assert panoptic_detr.load_model(again).inference_defaults == CARRIED


def test_an_official_checkpoint_gets_the_official_defaults(tmp_path, image_path):
    """An official-layout file (a bare state dict, 250 COCO classes) has no settings of its own."""
    torch.manual_seed(0)
    official = panoptic_detr.build_model("tiny", num_classes=250)
    path = tmp_path / "official.pth"
    torch.save({"model": official.state_dict()}, path)
    loaded = panoptic_detr.load_model(path)
    assert loaded.inference_defaults == OFFICIAL
    predictor = Predictor(loaded)
    assert (predictor.threshold, predictor.dedup, predictor.short_side, predictor.max_size, predictor.geometry) == (
        0.85, None, 800, 1333, "official")
    assert predictor.settings_line() == ("inference: threshold 0.85, dedup off, short side 800, max size 1333, "
                                         "geometry official (from the checkpoint)")


def test_a_model_without_defaults_is_aligned(model):
    p = Predictor(model)
    assert (p.threshold, p.dedup, p.short_side, p.max_size, p.geometry) == (0.85, None, 800, 1333, "aligned")
    assert p.settings_line().endswith("geometry aligned (built-in defaults)")


def test_the_shipped_base_model_carries_its_recipe():
    """MODEL_CARD.md's values: threshold 0.4, dedup 0.5, short side 288, max size 1333."""
    assert panoptic_detr.load_model(BASE_MODEL).inference_defaults == InferenceDefaults(0.4, 0.5, 288, 1333, "aligned")


@pytest.mark.parametrize("bad, key", [({"threshold": 1.5}, "threshold"), ({"geometry": "stretched"}, "geometry"),
                                      ({"short_side": 0}, "short_side"), ({"dedup": float("nan")}, "dedup"),
                                      ({"max_size": 10.5}, "max_size"), ({"mystery": 1}, "mystery")])
def test_bad_settings_in_a_checkpoint_are_one_line_errors(model, tmp_path, bad, key, capsys):
    path = tmp_path / "bad.pth"
    torch.save({"model": model.state_dict(), "config": model.config.to_dict(), "inference": bad}, path)
    with pytest.raises(CheckpointError, match=key):
        panoptic_detr.load_model(path)
    assert main(["predict", str(path), str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and key in err and "Traceback" not in err


# --------------------------------------------------------------------------- API
def test_predictor_uses_the_checkpoints_settings_and_arguments_override_them(model, carrying, image_path):
    from_path = Predictor(carrying)
    assert from_path.inference == CARRIED
    assert from_path.settings_line() == ("inference: threshold 0.3, dedup 0, short side 64, max size 100, "
                                         "geometry official (from the checkpoint)")
    explicit = Predictor(model, **CARRIED.to_dict())
    a, b = from_path(image_path), explicit(image_path)
    assert torch.equal(a.id_map, b.id_map) and a.segments_info == b.segments_info
    assert a.id_map.shape == (61, 90) and len(a.segments_info) > 0

    over = Predictor(carrying, threshold=0.6, dedup=None, geometry="aligned")
    assert over.inference == InferenceDefaults(0.6, None, 64, 100, "aligned")
    assert over.settings_line({"threshold": "--threshold"}).endswith(
        "(from the checkpoint; --threshold, dedup, geometry given)")
    with pytest.raises(PanopticDetrError, match="geometry"):
        Predictor(model, geometry="stretched")
    with pytest.raises(PanopticDetrError, match="threshold"):
        Predictor(model, threshold=1.0)


def test_the_predictor_applies_the_malloc_tuning():
    """README's API path gets the allocator setting the CLI applies (process-wide)."""
    code = ("import torch, panoptic_detr.utils.malloc as m; from panoptic_detr.engine.predict import Predictor\n"
            "assert not m._done\ntry: Predictor(torch.nn.Linear(1, 1))  # refused (no mask head) after the tuning\n"
            "except Exception: pass\nprint(m._done)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True"]


# --------------------------------------------------------------------------- CLI
def test_commands_share_one_definition_of_the_inference_options():
    dests = ("threshold", "dedup", "short_side", "max_size", "geometry")
    for command, extra in (("predict", ["c", "i", "--out", "o"]), ("evaluate", ["c", "d"]),
                           ("explain", ["c", "i", "--out", "o"])):
        args = build_parser(command).parse_args([command, *extra])
        assert all(getattr(args, d) is None for d in dests), command  # None: the checkpoint's
        args = build_parser(command).parse_args([command, *extra, "--dedup", "off", "--geometry", "official"])
        assert (args.dedup, args.geometry) == ("off", "official")
    args = build_parser("prepare").parse_args(["prepare", "--class-map", "demo", "--out", "o", "--teacher-max-size",
                                               "500", "--teacher-geometry", "aligned"])
    assert (args.teacher_threshold, args.teacher_max_size, args.teacher_geometry) == (None, 500, "aligned")


def test_predict_cli_uses_the_checkpoint_and_flags_override(model, carrying, image_path, tmp_path, capsys):
    out = tmp_path / "carried"
    assert main(["predict", str(carrying), str(image_path), "--out", str(out), "--quiet", "--no-overlay"]) == 0
    err = capsys.readouterr().err
    line = "inference: threshold 0.3, dedup 0, short side 64, max size 100, geometry official (from the checkpoint)"
    assert err.count("inference: ") == 1 and line in err
    expected = Predictor(model, **CARRIED.to_dict())(image_path)
    np.testing.assert_array_equal(read_ids(out / "panoptic" / "scene.png"), expected.id_map.numpy())

    out2 = tmp_path / "flags"
    assert main(["predict", str(carrying), str(image_path), "--out", str(out2), "--quiet", "--no-overlay",
                 "--threshold", "0.6", "--dedup", "off", "--geometry", "aligned"]) == 0
    err = capsys.readouterr().err
    assert ("inference: threshold 0.6, dedup off, short side 64, max size 100, geometry aligned "
            "(from the checkpoint; --threshold, --dedup, --geometry given)") in err
    expected = Predictor(model, threshold=0.6, dedup=None, short_side=64, max_size=100, geometry="aligned")(image_path)
    got = read_ids(out2 / "panoptic" / "scene.png")
    np.testing.assert_array_equal(got, expected.id_map.numpy())
    assert not np.array_equal(got, read_ids(out / "panoptic" / "scene.png"))  # the flags changed the result


def test_bad_flag_values_name_the_flag(carrying, image_path, tmp_path, capsys):
    for flags, named in ((["--threshold", "1.2"], "--threshold"), (["--dedup", "1.5"], "--dedup"),
                         (["--short-side", "0"], "--short-side")):
        assert main(["predict", str(carrying), str(image_path), "--out", str(tmp_path / "o"), *flags]) == 2
        assert f"error: {named}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", str(carrying), str(image_path), "--out", str(tmp_path / "o"), "--geometry", "x"])


def test_prepare_teacher_uses_the_checkpoints_settings(carrying, image_path, capsys):
    from panoptic_detr.commands.prepare import _teacher

    args = build_parser("prepare").parse_args(["prepare", "--class-map", "demo", "--out", "o", "--stuff-from",
                                               str(carrying), "--teacher-short-side", "80"])
    teacher = _teacher(args)
    image = np.asarray(Image.open(image_path).convert("RGB"))
    id_map, segments, cats = teacher(image)
    err = capsys.readouterr().err
    assert ("teacher inference: threshold 0.3, dedup 0, short side 80, max size 100, geometry official "
            "(from the checkpoint; --teacher-short-side given)") in err
    expected = Predictor(carrying, short_side=80)(image)
    np.testing.assert_array_equal(id_map, expected.id_map.numpy())
    bad = build_parser("prepare").parse_args(["prepare", "--class-map", "demo", "--out", "o", "--stuff-from",
                                              str(carrying), "--teacher-threshold", "2"])
    with pytest.raises(PanopticDetrError, match="--teacher-threshold"):
        _teacher(bad)  # checked before anything is read


def test_training_writes_its_eval_settings_into_its_model_files(model, tmp_path):
    """`Trainer.save_model_file` (model_final.pth, model_best.pth) stores the eval config's settings."""
    from panoptic_detr.engine.train_config import load_train_config
    from panoptic_detr.engine.trainer import Trainer

    cfg = load_train_config("tiny", {"eval": {"geometry": "official"}})
    fake = SimpleNamespace(main=True, out=tmp_path, model=model, categories=CATS, cfg=cfg)
    Trainer.save_model_file(fake, "model_final.pth", {"epochs": 1})
    loaded = panoptic_detr.load_model(tmp_path / "model_final.pth")
    assert loaded.inference_defaults == InferenceDefaults(0.4, 0.5, 288, 480, "official")  # tiny.yaml's eval
    assert load_checkpoint(tmp_path / "model_final.pth")["epochs"] == 1


def test_explain_uses_the_checkpoints_settings(carrying, image_path, tmp_path, capsys, monkeypatch):
    import panoptic_detr.commands._explain_output as explain_output

    seen = []
    monkeypatch.setattr(explain_output, "explain_to_folder", lambda predictor, *a, **k: seen.append(predictor) or "x")
    assert main(["explain", str(carrying), str(image_path), "--out", str(tmp_path / "e"), "--dedup", "off"]) == 0
    assert seen[0].inference == CARRIED.replace(dedup=None)
    assert ("inference: threshold 0.3, dedup off, short side 64, max size 100, geometry official "
            "(from the checkpoint; --dedup given)") in capsys.readouterr().err


def test_argparse_dedup_value():
    from panoptic_detr.commands import _dedup_value

    assert _dedup_value("0.5") == 0.5 and _dedup_value("OFF") == "off"
    with pytest.raises(argparse.ArgumentTypeError):
        _dedup_value("half")
