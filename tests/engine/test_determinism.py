"""Training is bit-identical run to run on several CPU threads, whatever the machine load.

The backward of advanced indexing (`t[index]`) adds into repeated rows with unordered atomic
adds when several threads run: two identical runs on a loaded machine ended with different
weights. The training path gathers with index_select instead (model/segmentation.py,
engine/criterion.py); these tests would catch a gather that comes back.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "utils"))
from fake_prepared import TINY_SETTINGS, write_prepared  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _train_cmd(data, out):
    # batch 3 with 5 targets per image: 15 matched masks, so the threads' halves of each
    # gather's backward meet inside an image (where atomic adds would race)
    cmd = [sys.executable, "-m", "panoptic_detr", "train", "--data", str(data), "--out", str(out), "--config", "tiny",
           "--epochs", "2", "--batch-size", "3", "--workers", "0", "--seed", "3", "--threads", "2", "--no-progress"]
    for s in TINY_SETTINGS + ["model_overrides={dropout: 0.1}", "data.hflip=0.5", "data.crop_min=56"]:
        cmd += ["--set", s]
    return cmd


def test_two_thread_runs_under_load_are_bit_identical(tmp_path):
    data = write_prepared(tmp_path / "data", n_train=6, n_val=1, size=(64, 64), n_things=3)
    # OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning, so 5 busy
    # threads on 2 cores do not thrash (and threads wake late: races show more often)
    env = dict(os.environ, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        runs = [subprocess.Popen(_train_cmd(data, tmp_path / name), env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
        for p in runs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
    finally:
        burner.kill()
        burner.wait()
    a = torch.load(tmp_path / "a" / "model_final.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "model_final.pth", weights_only=True)["model"]
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ: {different[:3]}"


def test_mask_head_backward_is_repeatable_on_two_threads():
    """The mask decoder's gradients, 30 times over on 2 threads: one result (its gathers by
    advanced indexing gave several on most tries). The criterion's (image, query) gathers
    need no change: their pairs are distinct, so no two adds meet."""
    from panoptic_detr.model.segmentation import MaskContext, MaskHeadSmallConv

    torch.manual_seed(0)
    head = MaskHeadSmallConv(128 + 8, [32, 16, 8], 128)  # tiny's sizes: d_model 128, 8 heads
    # images 0, 1, 2 with 4, 7, 5 queries: every thread split falls inside an image
    bi = torch.tensor([0] * 4 + [1] * 7 + [2] * 5)
    qi = torch.arange(16) % 8
    image_term = torch.randn(3, 136, 4, 4, requires_grad=True)
    bbox_mask = torch.rand(3, 8, 8, 4, 4, requires_grad=True)
    fpns = [torch.randn(3, c, s, s, requires_grad=True) for c, s in ((64, 8), (32, 16), (16, 32))]
    leaves = [image_term, bbox_mask, *fpns]

    def grads():
        for t in leaves:
            t.grad = None
        head.decode(MaskContext(image_term, bbox_mask, fpns), bi, qi).square().sum().backward()
        return [t.grad.clone() for t in leaves]

    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = grads()
        repeats = [grads() for _ in range(30)]
    finally:
        torch.set_num_threads(n)
    differing = sum(not all(torch.equal(x, y) for x, y in zip(first, r)) for r in repeats)
    assert differing == 0, f"{differing} of 30 backward passes differ"


def test_deterministic_mode_upsampling_matches_interpolate():
    """The matrix form of bilinear upsampling (what the criterion uses in deterministic mode
    on GPUs) equals F.interpolate up to float rounding, up and down."""
    from panoptic_detr.engine.criterion import _bilinear_matrix

    torch.manual_seed(0)
    for h, w, H, W in [(16, 20, 64, 80), (17, 23, 64, 90), (12, 9, 5, 4), (8, 8, 8, 8)]:
        x = torch.randn(3, h, w, dtype=torch.float64)
        ref = F.interpolate(x[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        got = _bilinear_matrix(H, h, x) @ x @ _bilinear_matrix(W, w, x).T
        assert torch.allclose(got, ref, atol=1e-12), (h, w, H, W)


def test_deterministic_flag_sets_and_restores_torch_settings():
    from panoptic_detr.engine.determinism import deterministic_algorithms

    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms(True, torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms(False, torch.device("cpu")):
        assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_command_line_flag_reaches_the_config():
    import argparse

    from panoptic_detr.commands import train as command

    parser = argparse.ArgumentParser()
    command.configure(parser)
    base = ["--data", "d", "--out", "o", "--config", "tiny"]
    assert command.build_config(parser.parse_args(base + ["--deterministic"])).deterministic is True
    assert command.build_config(parser.parse_args(base)).deterministic is False
