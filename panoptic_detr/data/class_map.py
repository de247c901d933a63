"""The class map: which classes a prepared dataset has and what every input name folds into.

A class map is a YAML file (or a preset name: `construction`, `demo`, `base`, shipped as
`panoptic_detr/resources/<name>-class-map.yaml`)::

    things:                      # the thing classes, in id order
      - aac_blocks               # a class whose inputs carry exactly this name
      - vehicle: [car, truck]    # a class that also folds other input names (e.g. COCO)
    stuff:                       # the stuff groups, in id order: name -> names folded in
      misc: [all COCO thing classes]
      sky: ["sky-other-merged"]
      ground: ["gravel", "road", "dirt-merged"]
    aliases:                     # optional: any input name -> class name
      "Concrete Pump": concrete_pump
    cvat_folder_aliases:         # optional: per-class export folder name -> class name
      "concrete_pump_(50%)": concrete_pump
    ignore: ["unlabeled"]        # optional: input names dropped without complaint

A class may also be written `name: {fold: [names], init_from: [names]}`: `init_from` names the
classes of a pretrained checkpoint (e.g. COCO's `truck`) whose class-head rows start this
class's row when fine-tuning (`head_sources`); without it a class starts from its members,
the checkpoint's classes that fold into it (`members`).

`things` may also be a mapping (class -> list of folded names). The literal entry
`all COCO thing classes` (in at most one class's list, usually a stuff group `misc`)
folds every COCO-panoptic thing category that no class takes by name or fold list.

**The id space** (stable: it depends on the class map only, never on the data):
ids 1..C, contiguous, things first in class-map order, then the stuff groups in the order
the map lists them (`misc` is a stuff group like the others and takes the position the map
gives it; the shipped construction map lists it first among the stuff groups, so there it
gets id 49). The model's class index equals the category id (index 0 unused), so a model
for this dataset has `num_classes = C + 1`. Colours come from `categories.default_color`.

**Resolving an input name** (a COCO category, a CVAT label, a labelme label, a teacher's
category, a folder name) to a class, first match wins:
1. `aliases` / `cvat_folder_aliases` rewrite the name;
2. a class name;
3. a name listed in a class's fold list;
4. a name in `ignore` -> `IGNORE` (dropped);
5. a COCO-panoptic thing name -> the class holding `all COCO thing classes`;
6. steps 1-3 again on a normalised form (lower case, runs of non-alphanumerics -> `_`),
   so that `Dump Truck - Tipper Truck` finds `dump_truck_tipper_truck`;
7. otherwise unknown (`None`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from panoptic_detr.data.categories import RESOURCES, Category, CategoryList, coco_panoptic_categories, default_color
from panoptic_detr.errors import ConfigError

__all__ = ["ClassMap", "IGNORE", "ALL_COCO_THINGS", "PRESETS", "normalise_name"]

ALL_COCO_THINGS = "all COCO thing classes"
IGNORE = "<ignore>"
PRESETS = ("construction", "demo", "base")
_KNOWN_KEYS = {"things", "stuff", "aliases", "cvat_folder_aliases", "ignore"}
_CLASS_KEYS = {"fold", "init_from"}


def normalise_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def _is_all_coco(entry) -> bool:
    return isinstance(entry, str) and normalise_name(entry) in ("all_coco_thing_classes", "all_coco_things")


@dataclass
class ClassMap:
    things: list[str]
    stuff: dict[str, list[str]]  # group -> names folded into it (the literal ALL_COCO_THINGS kept)
    thing_folds: dict[str, list[str]] = field(default_factory=dict)  # thing -> extra input names
    aliases: dict[str, str] = field(default_factory=dict)
    folder_aliases: dict[str, str] = field(default_factory=dict)
    ignore: list[str] = field(default_factory=list)
    source: str = "<class map>"
    init_from: dict[str, list[str]] = field(default_factory=dict)  # class -> checkpoint classes its row starts from

    def __post_init__(self) -> None:
        self._build()

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, path_or_preset: str | Path) -> "ClassMap":
        """From a YAML file, or a preset name (`construction`, `demo`, `base`)."""
        p = Path(path_or_preset)
        preset = RESOURCES / f"{path_or_preset}-class-map.yaml"
        # A bare preset name wins over a same-named folder in the working directory.
        if isinstance(path_or_preset, str) and "/" not in path_or_preset and preset.exists() and not p.is_file():
            p = preset
        elif not p.is_file():
            known = ", ".join(sorted(q.name[: -len("-class-map.yaml")] for q in RESOURCES.glob("*-class-map.yaml")))
            raise ConfigError(f"{path_or_preset}: class map not found (a YAML file or a preset: {known})")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {str(e).splitlines()[0]}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: cannot read class map ({e})") from None
        return cls.from_dict(data, source=str(p))

    @classmethod
    def from_dict(cls, data, source: str = "<class map>") -> "ClassMap":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a class map is a mapping with 'things' and/or 'stuff'")
        unknown = sorted(set(data) - _KNOWN_KEYS)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(_KNOWN_KEYS))}")
        things: list[str] = []
        folds: dict[str, list[str]] = {}
        init_from: dict[str, list[str]] = {}
        raw_things = data.get("things") or []
        if isinstance(raw_things, dict):
            raw_things = [{k: v} for k, v in raw_things.items()]
        if not isinstance(raw_things, list):
            raise ConfigError(f"{source}: 'things' must be a list")
        for i, entry in enumerate(raw_things):
            if isinstance(entry, (str, int)) and not isinstance(entry, bool):
                things.append(str(entry))
            elif isinstance(entry, dict) and len(entry) == 1:
                (name, names), = entry.items()
                things.append(str(name))
                folds[str(name)] = _class_entry(names, f"{source}: thing '{name}'", init_from, str(name))
            else:
                raise ConfigError(f"{source}: things entry #{i} must be a name or 'name: [folded names]'")
        raw_stuff = data.get("stuff") or {}
        if isinstance(raw_stuff, list):  # a list of names or one-key mappings
            d = {}
            for i, entry in enumerate(raw_stuff):
                if isinstance(entry, str):
                    d[entry] = []
                elif isinstance(entry, dict) and len(entry) == 1:
                    d.update(entry)
                else:
                    raise ConfigError(f"{source}: stuff entry #{i} must be a name or 'name: [folded names]'")
            raw_stuff = d
        if not isinstance(raw_stuff, dict):
            raise ConfigError(f"{source}: 'stuff' must map group names to lists of names")
        stuff = {str(k): _class_entry(v, f"{source}: stuff group '{k}'", init_from, str(k)) for k, v in raw_stuff.items()}
        aliases = _str_dict(data.get("aliases"), f"{source}: aliases")
        folder_aliases = _str_dict(data.get("cvat_folder_aliases"), f"{source}: cvat_folder_aliases")
        ignore = _name_list(data.get("ignore"), f"{source}: ignore")
        return cls(things, stuff, folds, aliases, folder_aliases, ignore, source, init_from)

    # ------------------------------------------------------------- the tables
    def _build(self) -> None:
        src = self.source
        names = list(self.things) + list(self.stuff)
        if not names:
            raise ConfigError(f"{src}: no classes (give 'things' and/or 'stuff')")
        seen: set[str] = set()
        for n in names:
            if not n or n in seen:
                raise ConfigError(f"{src}: class '{n}' is listed twice" if n else f"{src}: empty class name")
            seen.add(n)
        self._classes = set(names)
        self._isthing = {n: (n in set(self.things)) for n in names}
        self.misc: str | None = None
        fold: dict[str, str] = {}
        groups = [(t, self.thing_folds.get(t, [])) for t in self.things] + list(self.stuff.items())
        for cls_name, members in groups:
            for m in members:
                if _is_all_coco(m):
                    if self.misc is not None and self.misc != cls_name:
                        raise ConfigError(f"{src}: '{ALL_COCO_THINGS}' appears in both '{self.misc}' and '{cls_name}'")
                    self.misc = cls_name
                    continue
                if m in self._classes and m != cls_name:
                    raise ConfigError(f"{src}: '{m}' is a class and is also folded into '{cls_name}'")
                if m in fold and fold[m] != cls_name:
                    raise ConfigError(f"{src}: '{m}' is folded into both '{fold[m]}' and '{cls_name}'")
                fold[m] = cls_name
        self._fold = fold
        for table, what in ((self.aliases, "aliases"), (self.folder_aliases, "cvat_folder_aliases")):
            for k, v in table.items():
                if v not in self._classes:
                    raise ConfigError(f"{src}: {what}: '{k}' -> '{v}', but '{v}' is not a class; classes: {', '.join(names)}")
        coco = coco_panoptic_categories()
        self._coco_things = {c.name for c in coco if c.isthing}
        # a normalised lookup, dropping keys that would be ambiguous
        norm: dict[str, str | None] = {}
        for key, target in [*((n, n) for n in names), *fold.items(), *self.aliases.items(), *self.folder_aliases.items()]:
            nk = normalise_name(key)
            if nk in norm and norm[nk] != target:
                norm[nk] = None
            else:
                norm[nk] = target
        self._norm = {k: v for k, v in norm.items() if v is not None}
        self._ignore = set(self.ignore) | {normalise_name(n) for n in self.ignore}
        cats = []
        for i, n in enumerate(names, start=1):
            cats.append(Category(id=i, name=n, isthing=self._isthing[n], color=default_color(i)))
        self._categories = CategoryList(cats)

    # ---------------------------------------------------------------- queries
    def categories(self) -> CategoryList:
        """The dataset's categories: ids 1..C (see the module docstring for the order)."""
        return self._categories

    @property
    def class_names(self) -> list[str]:
        return list(self.things) + list(self.stuff)

    def resolve(self, name: str, folder: bool = False) -> str | None:
        """The class an input name folds into, `IGNORE`, or None when unknown."""
        name = str(name)
        for table in ((self.folder_aliases, self.aliases) if folder else (self.aliases, self.folder_aliases)):
            if name in table:
                return table[name]
        if name in self._classes:
            return name
        if name in self._fold:
            return self._fold[name]
        nk = normalise_name(name)
        if name in self._ignore or nk in self._ignore:
            return IGNORE
        if name in self._coco_things and self.misc is not None:
            return self.misc
        if nk in self._norm:
            return self._norm[nk]
        return None

    def resolve_category(self, name: str, folder: bool = False) -> Category | None | str:
        """Like `resolve` but returns the `Category` (or `IGNORE` / None)."""
        target = self.resolve(name, folder)
        if target is None or target == IGNORE:
            return target
        return self._categories.by_name[target]

    def known_names(self) -> list[str]:
        """For error messages: the class names, then the names folded by lists and aliases."""
        extra = sorted(set(self._fold) | set(self.aliases) | set(self.folder_aliases))
        return self.class_names + extra

    def unknown_message(self, name: str) -> str:
        """'unknown category ...; known: <class names>' (one line)."""
        extra = len(set(self._fold) | set(self.aliases) | set(self.folder_aliases))
        folded = f"; plus {extra} names the map folds into them" if extra else ""
        misc = f"; COCO thing names fold into '{self.misc}'" if self.misc else ""
        return (f"unknown category '{name}' (not in class map {self.source}); "
                f"known: {', '.join(self.class_names)}{folded}{misc}")

    def members(self, name: str, categories=None) -> list[str]:
        """The names of `categories` (default: COCO panoptic's) that fold into class `name`,
        in their order: a stuff group's COCO members, `misc`'s COCO things, a thing's folds."""
        cats = categories if categories is not None else coco_panoptic_categories()
        return [c.name for c in cats if self.resolve(c.name) == name]

    def head_sources(self, categories=None) -> dict[str, list[str]]:
        """class -> the classes of `categories` (a checkpoint's) its class-head row starts from:
        `init_from` where the map gives it, else its `members` (classes without any are left out)."""
        out = {}
        for name in self.class_names:
            names = self.init_from.get(name) or self.members(name, categories)
            if names:
                out[name] = names
        return out

    def to_dict(self) -> dict:
        """The class map as a YAML-ready mapping (round-trips through `from_dict`)."""
        def entry(name: str, folds: list[str]):
            if name in self.init_from:
                return {"fold": list(folds), "init_from": list(self.init_from[name])}
            return list(folds)

        things = [({t: entry(t, self.thing_folds.get(t, []))} if self.thing_folds.get(t) or t in self.init_from else t)
                  for t in self.things]
        d: dict = {"things": things, "stuff": {k: entry(k, v) for k, v in self.stuff.items()}}
        if self.aliases:
            d["aliases"] = dict(self.aliases)
        if self.folder_aliases:
            d["cvat_folder_aliases"] = dict(self.folder_aliases)
        if self.ignore:
            d["ignore"] = list(self.ignore)
        return d


def _name_list(v, where: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
        raise ConfigError(f"{where}: expected a list of names")
    return [str(x) for x in v]


def _class_entry(v, where: str, init_from: dict[str, list[str]], name: str) -> list[str]:
    """A class's folded names: a list, or a mapping with `fold` and `init_from` (recorded in `init_from`)."""
    if not isinstance(v, dict):
        return _name_list(v, where)
    unknown = sorted(map(str, set(v) - _CLASS_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_CLASS_KEYS))}")
    if v.get("init_from") is not None:
        init_from[name] = _name_list(v["init_from"], f"{where}: init_from")
    return _name_list(v.get("fold"), f"{where}: fold")


def _str_dict(v, where: str) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ConfigError(f"{where}: expected a mapping of names")
    return {str(k): str(val) for k, val in v.items()}
