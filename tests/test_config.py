from dataclasses import dataclass, field

import pytest

from panoptic_detr.config import from_dict
from panoptic_detr.errors import ConfigError
from panoptic_detr.utils.io import atomic_dir, atomic_path, write_json, read_json
from panoptic_detr.errors import PanopticDetrError


@dataclass
class Inner:
    lr: float = 1e-4
    sizes: list[int] = field(default_factory=list)


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)


def test_from_dict_nested_and_typed():
    cfg = from_dict(Outer, {"name": "y", "inner": {"lr": 1, "sizes": [1, 2]}})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.sizes == [1, 2]


def test_from_dict_unknown_key_names_it():
    with pytest.raises(ConfigError, match="inner: unknown key.*lrr"):
        from_dict(Outer, {"inner": {"lrr": 1}})


def test_from_dict_wrong_type():
    with pytest.raises(ConfigError, match="name: expected str"):
        from_dict(Outer, {"name": 3})


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "a.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"a": 1})
    assert read_json(target) == {"a": 1}


def test_atomic_dir_refuses_existing_and_cleans_up(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PanopticDetrError, match="--overwrite"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "new") as d:
            (d / "f").write_text("x")
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic_dir(out, overwrite=True) as d:
        (d / "f").write_text("x")
    assert (out / "f").read_text() == "x"


def test_read_json_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(PanopticDetrError, match="bad.json: invalid JSON"):
        read_json(bad)


def test_atomic_outputs_get_umask_permissions_not_private_ones(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_yaml_syntax_error_keeps_line_column_and_problem(tmp_path):
    """A bracket left open in a hand-edited config: PyYAML's first line is only "while
    parsing a flow sequence"; the message keeps where and what."""
    from panoptic_detr.config import read_yaml

    bad = tmp_path / "train.yaml"
    bad.write_text("epochs: 3\ndata:\n  scales: [256, 288\n  batch_size: 2\n")
    with pytest.raises(ConfigError) as e:
        read_yaml(bad)
    msg = str(e.value)
    assert msg.startswith(f"{bad}: invalid YAML at line 4, column 13: expected ',' or ']'")
    assert "while parsing a flow sequence started at line 3, column 11" in msg and "\n" not in msg
    bad.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not a text"):
        read_yaml(bad)


def test_from_dict_rejects_nan_and_infinity():
    """`.nan` / `.inf` in YAML (or `--set optim.lr=nan`) are floats: refused by key."""
    with pytest.raises(ConfigError, match=r"^inner.lr: expected a finite number, got nan$"):
        from_dict(Outer, {"inner": {"lr": float("nan")}})
    with pytest.raises(ConfigError, match=r"^cfg 'x.yaml': inner.lr: expected a finite number, got inf$"):
        from_dict(Outer, {"inner": {"lr": float("inf")}}, where="cfg 'x.yaml'")
