"""Fine-tuning from a COCO checkpoint with a class map: each new class-head row starts from
the COCO rows the class map folds into it (`ClassMap.head_sources`, `group_row`)."""

from __future__ import annotations

import pytest
import torch
import yaml

from registry_server import SMALL, small_official_checkpoint
from panoptic_detr.data.categories import official_categories
from panoptic_detr.data.class_map import ClassMap
from panoptic_detr.engine.trainer import dataset_class_map, init_from_checkpoint
from panoptic_detr.model.build import build_model
from panoptic_detr.model.checkpoint import adapt_state_dict, group_row


def group_accuracy(sources, seed=0, n=3000):
    """On a random official-layout class head (251 x 256, nn.Linear's initialisation), decoder
    embeddings that one COCO class clearly wins (probability > 0.9 among the 250): how often
    the adapted construction head picks that class's group."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    coco, cmap = official_categories(250), ClassMap.load("construction")
    new = cmap.categories()
    head = torch.nn.Linear(256, 251)
    old_w, old_b = head.weight.detach(), head.bias.detach()
    sd = adapt_state_dict({"class_embed.weight": old_w, "class_embed.bias": old_b}, new.num_classes, coco, new,
                          sources(cmap, coco) if sources else None)
    w, b = sd["class_embed.weight"], sd["class_embed.bias"]
    valid = torch.tensor([c.id for c in coco])
    k = valid[torch.randint(len(valid), (n,), generator=g)]
    target_score = 10 + 15 * torch.rand(n, 1, generator=g)  # the member's logit, about
    h = target_score * old_w[k] / (old_w[k] ** 2).sum(1, keepdim=True) + 0.5 * torch.randn(n, 256, generator=g)
    p = (h @ old_w.T + old_b)[:, valid].softmax(1)
    clear = p.max(1).values > 0.9
    assert clear.sum() > n // 2
    assert torch.equal(valid[p.argmax(1)][clear], k[clear])
    picked = (h @ w.T + b)[:, 1:new.num_classes].argmax(1) + 1
    group = torch.tensor([new.by_name[cmap.resolve(coco.by_id[int(i)].name)].id for i in k])
    return float((picked == group)[clear].float().mean())


def test_new_head_picks_the_group_of_the_winning_member():
    with_sources = group_accuracy(lambda cmap, coco: cmap.head_sources(coco))
    by_name_only = group_accuracy(None)
    assert with_sources >= 0.95, with_sources
    assert by_name_only < 0.15, by_name_only  # 1 of 16 stuff groups + 48 random rows: chance


def test_group_row():
    w = torch.randn(3, 16, dtype=torch.float64)
    row, bias = group_row(w, torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(w @ row, (w * w).sum(1))  # each member's direction scores as the member
    assert float(bias) == 1.0
    same, _ = group_row(torch.stack([w[0], w[0]]), torch.zeros(2))
    torch.testing.assert_close(same, w[0])
    one, b1 = group_row(w[:1], torch.tensor([3.0]))
    assert torch.equal(one, w[0]) and float(b1) == 3.0


def test_members_and_init_from():
    coco = official_categories(250)
    shipped = ClassMap.load("construction")
    assert shipped.init_from["dump_truck_tipper_truck"] == ["truck"]  # the preset names its COCO sources
    data = shipped.to_dict()
    data["things"][10] = {"dump_truck_tipper_truck": {"init_from": "truck"}}
    cmap = ClassMap.from_dict(data)
    assert cmap.members("sky") == ["sky-other-merged"]
    assert cmap.members("water", coco) == ["river", "sea", "water-other"]
    assert len(cmap.members("misc", coco)) == 80 and "truck" in cmap.members("misc", coco)
    src = cmap.head_sources(coco)
    assert src["dump_truck_tipper_truck"] == ["truck"] and "aac_blocks" not in src
    assert ClassMap.from_dict(cmap.to_dict()).init_from == cmap.init_from
    from panoptic_detr.errors import ConfigError

    data["things"][10] = {"dump_truck_tipper_truck": {"init": "truck"}}
    with pytest.raises(ConfigError, match="unknown key"):
        ClassMap.from_dict(data)


def test_init_from_checkpoint_logs_where_rows_came_from(tmp_path):
    path, _, sd = small_official_checkpoint(tmp_path / "coco.pth")
    data = ClassMap.load("construction").to_dict()
    data["things"][10] = {"dump_truck_tipper_truck": {"init_from": "truck"}}
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump({"class_map": {"source": "mine.yaml", **data}}))
    cmap = dataset_class_map(tmp_path)
    cats = cmap.categories()
    model = build_model("tiny", categories=cats, **{**SMALL, "num_classes": cats.num_classes})
    log = []
    init_from_checkpoint(model, str(path), cats, log=log.append, class_map=cmap)
    line = log[-1]
    assert "class head adapted 250 -> 65 classes (0 carried over by name, 8 by init_from, " in line  # the preset names 8 COCO sources
    assert "2 from one folded class, 14 from their members' rows (131 rows; misc: 80)" in line and "misc: 80" in line
    assert line.endswith("40 fresh)")
    w, b = model.detr.class_embed.weight.detach(), model.detr.class_embed.bias.detach()
    old_w, old_b = sd["detr.class_embed.weight"], sd["detr.class_embed.bias"]
    coco = official_categories(250)
    truck, sky = coco.by_name["truck"].id, coco.by_name["sky-other-merged"].id
    assert torch.equal(w[cats.by_name["dump_truck_tipper_truck"].id], old_w[truck])
    assert torch.equal(w[cats.by_name["sky"].id], old_w[sky]) and torch.equal(b[-1], old_b[-1])
    wall = [coco.by_name[n].id for n in cmap.members("wall", coco)]
    gw, gb = group_row(old_w[wall], old_b[wall])
    torch.testing.assert_close(w[cats.by_name["wall"].id], gw)
    torch.testing.assert_close(b[cats.by_name["wall"].id], gb)
