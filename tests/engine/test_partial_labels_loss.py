"""`loss.partial_labels`: the DETR form of LVIS's federated loss (engine/criterion.py)."""

import torch

from panoptic_detr.engine.criterion import SetCriterion, build_weight_dict
from panoptic_detr.engine.matcher import HungarianMatcher

# classes 1..4 (0 unused as in prepared datasets), no object = 5; 3 queries, 2 images
NUM_CLASSES = 5


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, NUM_CLASSES + 1, generator=g)
    boxes = torch.rand(2, 3, 4, generator=g) * 0.5 + 0.25
    aux = [{"pred_logits": torch.randn(2, 3, NUM_CLASSES + 1, generator=g),
            "pred_boxes": torch.rand(2, 3, 4, generator=g) * 0.5 + 0.25}]
    targets = [
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])},
        {"labels": torch.tensor([2, 3]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.1, 0.2]])},
    ]
    return logits, boxes, aux, targets


def _criterion(partial):
    return SetCriterion(NUM_CLASSES, HungarianMatcher(), build_weight_dict(num_aux=1), eos_coef=0.1,
                        losses=("labels", "boxes", "cardinality"), partial_labels=partial)


def _losses(crit, logits, boxes, aux, targets):
    return crit({"pred_logits": logits, "pred_boxes": boxes, "aux_outputs": aux}, targets)


def test_all_annotated_equals_the_standard_loss_exactly():
    logits, boxes, aux, targets = _inputs()
    standard = _losses(_criterion(False), logits, boxes, aux, targets)
    for unannotated in (None, torch.zeros(0, dtype=torch.int64)):  # no key, or an empty set
        t = [dict(x) for x in targets]
        if unannotated is not None:
            for x in t:
                x["unannotated"] = unannotated
        partial = _losses(_criterion(True), logits, boxes, aux, t)
        assert partial.keys() == standard.keys()
        for k in standard:
            assert torch.equal(partial[k], standard[k]), k


def _matched(crit, logits, boxes, targets):
    (src0, _), (src1, _) = crit.matcher({"pred_logits": logits, "pred_boxes": boxes}, targets)
    return [int(q) for q in src0], [int(q) for q in src1]


def test_unannotated_logit_gets_no_gradient_from_its_image():
    logits, boxes, aux, targets = _inputs(1)
    logits.requires_grad_(True)
    targets[0]["unannotated"] = torch.tensor([3, 4])  # image 0: classes 3 and 4 not annotated
    targets[1]["unannotated"] = torch.zeros(0, dtype=torch.int64)
    crit = _criterion(True)
    m0, _ = _matched(crit, logits, boxes, targets)
    free = [q for q in range(3) if q not in m0]  # the queries trained towards "no object"
    losses = crit({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert torch.isfinite(losses["loss_ce"])
    losses["loss_ce"].backward()
    g = logits.grad
    # neither up nor down, from any query that may sit on an unlabelled object
    assert torch.all(g[0, free][:, [3, 4]] == 0)
    assert torch.all(g[0, :, 1] != 0) and torch.all(g[0, :, 2] != 0)  # annotated classes still train
    assert torch.all(g[0, :, NUM_CLASSES] != 0)  # and "no object"
    assert torch.all(g[1, :, 3] != 0) and torch.all(g[1, :, 4] != 0)  # the other image annotates them
    # the matched query trains as before: its labelled object is not a 3 or a 4
    logits2 = logits.detach().clone().requires_grad_(True)
    _criterion(False)({"pred_logits": logits2, "pred_boxes": boxes}, targets)["loss_ce"].backward()
    assert torch.equal(g[0, m0], logits2.grad[0, m0]) and torch.all(g[0, m0][:, [3, 4]] != 0)
    # while the standard loss pushes the unannotated classes down on the other queries too
    assert torch.all(logits2.grad[0, free][:, [3, 4]] != 0)


def test_aux_outputs_and_not_exhaustive_classes():
    """The auxiliary decoder outputs get the same rule; a labelled instance of a class that
    is not annotated exhaustively (LVIS's not_exhaustive) still trains its matched query."""
    logits, boxes, aux, targets = _inputs(2)
    aux[0]["pred_logits"].requires_grad_(True)
    targets[0]["unannotated"] = torch.tensor([1, 4])  # its one label is class 1
    targets[1]["unannotated"] = torch.zeros(0, dtype=torch.int64)
    crit = _criterion(True)
    losses = crit({"pred_logits": logits, "pred_boxes": boxes, "aux_outputs": aux}, targets)
    assert torch.isfinite(losses["loss_ce_0"])
    losses["loss_ce_0"].backward()
    g = aux[0]["pred_logits"].grad
    m0, _ = _matched(crit, aux[0]["pred_logits"].detach(), aux[0]["pred_boxes"], targets)
    free = [q for q in range(3) if q not in m0]
    assert torch.all(g[0, m0][:, 1] != 0)  # the matched query: its class 1 trains
    assert torch.all(g[0, free][:, [1, 4]] == 0)
