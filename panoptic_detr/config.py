"""Typed configuration: dataclasses filled from YAML presets or files.

Presets live in `panoptic_detr/configs/<kind>/<name>.yaml`. A preset may name a `base`
preset of the same kind whose values it overrides. Unknown keys are errors, so a typo in
a config file is reported instead of silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from panoptic_detr.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
T = TypeVar("T")


def preset_names(kind: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {yaml_error_message(e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (YAML) file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def yaml_error_message(e: yaml.YAMLError) -> str:
    """One line from a YAML error: where (line, column, 1-based) and what, plus what was
    being parsed (PyYAML's own first line, e.g. "while parsing a flow sequence", says
    neither where nor what)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if mark is None or not problem:
        return "invalid YAML: " + " ".join(str(e).split())[:200]
    msg = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context:
        where = f" started at line {cmark.line + 1}, column {cmark.column + 1}" if cmark is not None else ""
        msg += f" ({context}{where})"
    return msg


def resolve_preset(kind: str, name_or_path: str) -> dict:
    """The values of a preset name (or a YAML file path), with its `base` chain merged."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = CONFIG_DIR / kind / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown {kind} preset '{name_or_path}'; known: {', '.join(preset_names(kind))}"
            )
    values = read_yaml(path)
    base = values.pop("base", None)
    if base is not None:
        merged = resolve_preset(kind, base)
        _deep_update(merged, values)
        values = merged
    return values


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def from_dict(cls: type[T], values: dict, where: str = "") -> T:
    """Build dataclass `cls` from a dict, checking keys and converting nested dataclasses."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _convert(hints[name], value, _key(where, name))
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def _key(where: str, name: str) -> str:
    """`where` extended by a key: "train config 'x.yaml'" + "optim" -> "train config
    'x.yaml': optim", then + "lr" -> "train config 'x.yaml': optim.lr"."""
    if not where:
        return name
    if " " in where and ": " not in where:  # a description of the source, not yet a key
        return f"{where}: {name}"
    return f"{where}.{name}"


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where) if len(args) == 1 else value
    if origin is dict:
        if value is None:  # an empty YAML section
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, arg = typing.get_args(tp) or (Any, Any)
        return {k: _convert(arg, v, _key(where, str(k))) for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg, *_) = typing.get_args(tp) or (Any,)
        items = [_convert(arg, v, where) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # YAML reads .nan / .inf; --set reads nan / inf
            raise ConfigError(f"{where}: expected a finite number, got {value}")
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)
