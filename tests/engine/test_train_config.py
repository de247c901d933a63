import pytest

from panoptic_detr.engine.train_config import load_train_config, parse_overrides
from panoptic_detr.errors import ConfigError


def test_presets_follow_the_recipes():
    r50 = load_train_config("r50-panoptic")
    assert (r50.optim.lr, r50.optim.lr_backbone, r50.optim.weight_decay, r50.optim.clip_max_norm) == (1e-4, 1e-5, 1e-4, 0.1)
    assert r50.optim.clip_mode == "global" and r50.optim.lr_drop == 200 and r50.epochs == 300
    assert r50.data.scales == list(range(480, 801, 32)) and r50.data.max_size == 1333 and r50.loss.eos_coef == 0.1
    masks = load_train_config("r50-panoptic", {"stage": "masks"})
    assert (masks.epochs, masks.optim.lr_drop) == (25, 15)
    det = load_train_config("r50")
    assert det.model == "r50" and det.stage == "boxes"
    tiny = load_train_config("tiny")
    assert tiny.model == "tiny" and tiny.model_overrides["dropout"] == 0.0
    assert tiny.optim.clip_mode == "per_group" and tiny.optim.warmup_steps > 0 and tiny.data.batch_size == 4
    assert 256 <= min(tiny.data.scales) and max(tiny.data.scales) <= 384 and tiny.data.eval_size == 288
    assert load_train_config("tiny", {"stage": "masks"}).epochs == tiny.epochs  # no r50 stage overrides


def test_overrides_parse_and_validate():
    o = parse_overrides(["optim.lr=5e-4", "data.scales=[256, 288]", "model_overrides={a: 1}", "model_overrides={b: 2}", "init=x.pth"])
    assert o == {"optim": {"lr": 5e-4}, "data": {"scales": [256, 288]}, "model_overrides": {"a": 1, "b": 2}, "init": "x.pth"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["oops"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_train_config("tiny", {"optim": {"lrr": 1}})
    with pytest.raises(ConfigError, match="stage"):
        load_train_config("tiny", {"stage": "all"})
    with pytest.raises(ConfigError, match="unknown train preset"):
        load_train_config("nope")
    with pytest.raises(ConfigError, match="eval.dedup"):
        load_train_config("tiny", {"eval": {"dedup": 1.0}})
    assert load_train_config("tiny").eval.dedup == 0.5 and load_train_config("r50-panoptic").eval.dedup is None


def test_lr_multipliers_make_their_own_optimizer_groups():
    from panoptic_detr.engine.optim import group_lr, param_groups, set_trainable
    from panoptic_detr.model.build import build_model

    model = build_model("tiny")
    set_trainable(model, "joint", 1e-5, True)
    groups = param_groups(model, 1e-4, 1e-5, 1e-4, {"bbox_attention": 10})
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"main", "backbone", "bbox_attention"}
    assert by_name["bbox_attention"]["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in by_name["bbox_attention"]["params"]} == {id(p) for p in model.bbox_attention.parameters()}
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_trainable
    cfg = load_train_config("tiny", {"optim": {"lr_mult": {"bbox_attention": 10}}})
    assert group_lr("bbox_attention", cfg.optim) == pytest.approx(10 * cfg.optim.lr)
    assert group_lr("backbone", cfg.optim) == cfg.optim.lr_backbone
    with pytest.raises(ConfigError, match="unknown module group 'bbox'"):
        param_groups(model, 1e-4, 1e-5, 1e-4, {"bbox": 2})


@pytest.mark.parametrize("yaml_text, message", [
    ("optim:\n  lr: -1.0e-4\n", "optim.lr: must be >= 0.0, got -0.0001"),
    ("optim:\n  lr: .nan\n", "optim.lr: expected a finite number, got nan"),
    ("optim:\n  weight_decay: -0.01\n", "optim.weight_decay: must be >= 0.0, got -0.01"),
    ("optim:\n  clip_max_norm: .nan\n", "optim.clip_max_norm: expected a finite number, got nan"),
    ("loss:\n  dice: .nan\n", "loss.dice: expected a finite number, got nan"),
    ("loss:\n  eos_coef: 1.5\n", "loss.eos_coef: must be in [0.0, 1.0], got 1.5"),
    ("data:\n  hflip: .nan\n", "data.hflip: expected a finite number, got nan"),
    ("data:\n  scales: [256, 0]\n", "data.scales[1]: must be >= 1, got 0"),
    ("optim:\n  lr_mult: {bbox_attention: -2}\n", "optim.lr_mult.bbox_attention: must be >= 0.0, got -2.0"),
    ("epochs: .inf\n", "epochs: expected int, got inf"),
])
def test_every_numeric_field_is_range_checked_naming_file_and_key(tmp_path, yaml_text, message):
    """A typo'd or NaN value in a user's train YAML was accepted: a torch ValueError
    traceback, or training that failed at step 1 naming neither file nor key."""
    path = tmp_path / "my.yaml"
    path.write_text("base: tiny\n" + yaml_text)
    with pytest.raises(ConfigError) as e:
        load_train_config(str(path))
    assert str(e.value) == f"train config '{path}': {message}"


def test_command_line_values_are_named_as_such():
    with pytest.raises(ConfigError, match=r"^train config 'tiny' \(set on the command line\): optim.lr: must be >= 0.0"):
        load_train_config("tiny", parse_overrides(["optim.lr=-1"]))
    with pytest.raises(ConfigError, match=r"^train config 'tiny': optim.lr: expected a finite number, got nan$"):
        load_train_config("tiny", parse_overrides(["optim.lr=nan"]))


def test_train_with_a_bad_config_writes_nothing(tmp_path, capsys):
    """Before: train_config.yaml was left behind by a run whose config was invalid."""
    from panoptic_detr.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny\noptim:\n  lr: .nan\n")
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(out), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: train config '{bad}': optim.lr: expected a finite number, got nan\n"
    assert not out.exists()
