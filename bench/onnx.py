"""Benchmark: ONNX Runtime and OpenVINO vs the torch `Predictor` on the r50 panoptic model, 800x1066, CPU.

Builds r50-panoptic with random weights whose class head keeps about `--kept` queries
(default 15, `bench/predict.py`'s calibration), exports it with `panoptic-detr export` in
a child process (time and peak RSS of the export), then times, interleaved in one
process, the torch path (`engine.predict.Predictor`: forward without masks, mask head
for the kept queries, panoptic inference) and the export's path on each runtime
(`deploy.onnx_predictor.OnnxPredictor`: detr.onnx, mask_head.onnx for the kept
queries, the same panoptic inference; ONNX Runtime, and OpenVINO when installed), all
from the normalised tensor (pre-processing is shared and not timed). Prints median / min
ms per image, the ratios, the share of identical panoptic-map pixels and how near a tie
the differing pixels are in the torch path (the margin between its two largest mask
logits there), each backend's peak RSS (measured alone, in a child process) and the
file sizes. Exit 1 when a runtime's maps are identical on under 99.9% of pixels.

    .venv/bin/python bench/onnx.py [--threads 2] [--runs 5] [--kept 15] [--opt-level all]
        [--runtimes onnxruntime,openvino] [--export-dir DIR (reuse an export)] [--keep-export DIR]

Random mask heads give every query nearly the same mask (to ~1e-7: see
`distinct_masks`), so a pixel's argmax between queries would be decided by float
rounding in either backend; the random head is rescaled so that each query gets its own
mask, as in a trained model (`--plain-masks` skips it), and the class head's "no object"
bias sits mid-way in the range that keeps `--kept` queries, so no query sits at the
threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# this file is named onnx.py: its folder (which Python puts first on the path) would hide the onnx package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(BENCH.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def bench_image() -> np.ndarray:
    """bench/predict.py's smooth random "photo", 600x800 (processed 800x1066)."""
    from PIL import Image

    small = np.random.default_rng(0).integers(0, 255, (15, 20, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((800, 600), Image.BICUBIC))


def decoder_output(model, x: torch.Tensor) -> torch.Tensor:
    """The last decoder layer's output for image x: [Q, d]."""
    captured = []
    handle = model.detr.class_embed.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    with torch.inference_mode():
        model(x[None], with_masks=False)
    handle.remove()
    return captured[-1][-1, 0].clone()


def distinct_masks(model, hs: torch.Tensor) -> None:
    """Make a random mask head give each query its own mask, as a trained one does.

    At random init the decoder outputs of all queries are nearly equal (spread ~0.05 for a
    norm of 16), the softmax attention maps are ~1e-4 and the image features dominate, so
    every query gets the same mask to ~1e-7 and the argmax between them is float noise. Here
    the bbox attention sees only the query-specific part of the decoder output (scaled up),
    its maps weigh 1000x more in `lay1`, and the image features 10x less: masks then differ
    between queries by ~0.1 (on a spread of ~0.4), and the map comparison measures the
    backends, not ties. The time per image does not change (same shapes, same ops).
    """
    mu = hs.mean(0)
    spread = (hs - mu).norm(dim=1).mean()
    head, att = model.mask_head, model.bbox_attention
    d = head.dim - att.num_heads
    with torch.no_grad():
        weight = att.q_linear.weight * (30.0 / spread)
        att.q_linear.weight.copy_(weight)
        att.q_linear.bias.copy_(-weight @ mu)
        head.lay1.weight[:, d:].mul_(1000.0)
        head.lay1.weight[:, :d].mul_(0.1)
        for adapter in (head.adapter1, head.adapter2, head.adapter3):
            adapter.weight.mul_(0.1)


def calibrate_class_head(model, hs: torch.Tensor, kept: int, threshold: float) -> None:
    """Random class weights (varied classes) and the "no object" bias in the middle of the range
    that keeps exactly `kept` queries (so no query sits at the threshold: bench/predict.py's
    bisection stops at the edge of that range, where float rounding decides one query)."""
    from panoptic_detr.engine.inference import select_queries

    mu = hs.mean(0)
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(model.detr.class_embed.weight.shape, generator=g) * (8.0 / (hs - mu).norm(dim=1).mean())
    weight[-1] = 0
    bias = -weight @ mu
    logits = hs @ weight.T + bias
    grid = torch.arange(-50.0, 50.0, 0.01)
    counts = []
    for b in grid:
        logits[:, -1] = b
        counts.append(int(select_queries(logits, threshold)[0].sum()))
    counts = torch.tensor(counts)
    best = (counts - kept).abs()
    hits = (best == best.min()).nonzero().flatten()
    bias[-1] = grid[hits[len(hits) // 2]]
    with torch.no_grad():
        model.detr.class_embed.weight.copy_(weight)
        model.detr.class_embed.bias.copy_(bias)


def build_model(kept: int, threshold: float, distinct: bool = True):
    import panoptic_detr
    from panoptic_detr.data.preprocess import preprocess_image

    torch.manual_seed(0)
    model = panoptic_detr.build_model("r50-panoptic")
    x, _ = preprocess_image(bench_image())
    hs = decoder_output(model, x)
    if distinct:
        distinct_masks(model, hs)
    calibrate_class_head(model, hs, kept, threshold)
    return model


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a child started
    from a big parent inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_export(args) -> int:
    """--child-export: `panoptic-detr export` in this process; prints its peak RSS."""
    from panoptic_detr.cli import main

    code = main(["export", str(args.checkpoint), "--out", str(args.export_dir), "--overwrite"])
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))
    return code


def child_memory(args) -> int:
    """--child-memory BACKEND: one image through one backend alone; prints its peak RSS."""
    from panoptic_detr.data.preprocess import preprocess_image

    torch.set_num_threads(args.threads)
    x, original = preprocess_image(bench_image())
    if args.child_memory == "torch":
        from panoptic_detr.engine.predict import Predictor

        predictor = Predictor(args.checkpoint, threshold=args.threshold)
    else:
        from panoptic_detr.deploy.onnx_predictor import OnnxPredictor

        predictor = OnnxPredictor(args.export_dir, threshold=args.threshold, threads=args.threads,
                                  optimization=args.opt_level, runtime=args.child_memory)
    for _ in range(2):
        predictor.predict_tensors([x], [original])
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))
    return 0


def run_child(argv: list[str]) -> tuple[dict, float]:
    """(the child's last JSON line, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"child failed: {' '.join(argv)}")
    return json.loads(lines[-1]), wall


def category_map(out) -> torch.Tensor:
    table = torch.zeros(int(out.id_map.max()) + 1, dtype=torch.int64)
    for s in out.segments_info:
        table[s["id"]] = s["category_id"]
    return table[out.id_map.long()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kept", type=int, default=15)
    ap.add_argument("--threshold", type=float, default=0.85)
    ap.add_argument("--opt-level", default="all", choices=["disable", "basic", "extended", "all"],
                    help="ONNX Runtime graph optimisation level (default all)")
    ap.add_argument("--plain-masks", action="store_true",
                    help="leave the random mask head as it is (every query's mask equal to ~1e-7)")
    ap.add_argument("--export-dir", type=Path, default=None, help="reuse this export (with --checkpoint)")
    ap.add_argument("--checkpoint", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--keep-export", type=Path, default=None, help="copy the export here")
    ap.add_argument("--runtimes", default="onnxruntime,openvino",
                    help="the runtimes compared with torch, those installed (default onnxruntime,openvino)")
    ap.add_argument("--child-memory", choices=["torch", "onnxruntime", "openvino"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-export", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory:
        return child_memory(args)
    if args.child_export:
        return child_export(args)
    import shutil

    work = Path(tempfile.mkdtemp(prefix="bench-onnx-"))  # the checkpoint and the export (~330 MiB)
    try:
        return compare(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def available_runtimes(asked: list[str]) -> list[str]:
    import importlib.util

    out = []
    for name in asked:
        if importlib.util.find_spec(name) is None:
            print(f"{name} is not installed: skipped (pip install 'panoptic-detr[{'deploy' if name == 'onnxruntime' else name}]')")
        else:
            out.append(name)
    return out


def torch_margins(model, x: torch.Tensor, threshold: float, size) -> torch.Tensor:
    """Per pixel of the panoptic map, the torch path's margin between the two largest mask logits
    of the kept queries (at stride 4, spread to the map's size): how near a tie the pixel is."""
    from panoptic_detr.engine.inference import select_queries

    with torch.inference_mode():
        out = model(x[None], with_masks=False)
        kept = select_queries(out["pred_logits"][0], threshold)[0].nonzero().flatten()
        masks = model.masks_for_queries(out["mask_context"], torch.zeros_like(kept), kept)
    top2 = masks.topk(2, dim=0).values
    margin = (top2[0] - top2[1])[None, None]
    return torch.nn.functional.interpolate(margin, size=size, mode="nearest")[0, 0]


def compare(args, work: Path) -> int:
    from panoptic_detr.data.preprocess import preprocess_image
    from panoptic_detr.deploy.onnx_predictor import OnnxPredictor
    from panoptic_detr.engine.predict import Predictor
    from panoptic_detr.model.checkpoint import save_model
    from panoptic_detr.utils.malloc import tune_malloc

    tune_malloc()
    torch.set_num_threads(args.threads)
    runtimes = available_runtimes(args.runtimes.split(","))
    model = build_model(args.kept, args.threshold, not args.plain_masks)
    checkpoint = args.checkpoint or save_model(work / "r50-panoptic-random.pth", model)
    export_dir = args.export_dir
    if export_dir is None:
        export_dir = args.keep_export or work / "onnx"
        result, export_s = run_child(["--child-export", "--checkpoint", str(checkpoint), "--export-dir", str(export_dir)])
        print(f"export (`panoptic-detr export` in a child process, incl. loading the checkpoint and the check "
              f"at a second size): {export_s:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB")
    sizes = {p.name: p.stat().st_size / 2**20 for p in sorted(export_dir.glob("*.onnx"))}
    print("files: " + ", ".join(f"{k} {v:.1f} MiB" for k, v in sizes.items()))

    x, original = preprocess_image(bench_image())
    predictors = {"torch": Predictor(model, threshold=args.threshold)}
    for runtime in runtimes:
        t0 = time.perf_counter()
        predictors[runtime] = OnnxPredictor(export_dir, threshold=args.threshold, threads=args.threads,
                                            optimization=args.opt_level, runtime=runtime)
        print(f"{runtime}: graphs loaded in {time.perf_counter() - t0:.1f} s")
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} CPUs; input {x.shape[-2]}x{x.shape[-1]}, "
          f"{args.threads} threads (every backend), ONNX Runtime graph optimisation '{args.opt_level}'")

    cpu = {name: [] for name in predictors}
    times = {name: [] for name in predictors}
    outs = {}

    def run(name):
        c0, t0 = time.process_time(), time.perf_counter()
        outs[name] = predictors[name].predict_tensors([x], [original])[0]
        return time.perf_counter() - t0, time.process_time() - c0

    for name in predictors:  # warm-up (allocations, kernel caches, shape-specialised kernels)
        run(name), run(name)
    for _ in range(args.runs):  # interleaved: every backend sees the same machine load
        for name in predictors:
            t, c = run(name)
            times[name].append(t)
            cpu[name].append(c)
    for name, t in times.items():
        print(f"{name:12s} {1000 * statistics.median(t):6.0f} ms/image median, {1000 * min(t):6.0f} min, "
              f"CPU time {statistics.median(cpu[name]):.2f} s (forward + mask head for the kept queries + "
              f"panoptic inference; {len(outs[name].segments_info)} segments)")
    ref = outs["torch"]
    margin = torch_margins(model, x, args.threshold, tuple(ref.id_map.shape))
    parity_ok = True
    for name in runtimes:
        ratio = statistics.median(times["torch"]) / statistics.median(times[name])
        ratio_min = min(times["torch"]) / min(times[name])
        ratio_cpu = statistics.median(cpu["torch"]) / statistics.median(cpu[name])
        differ = ref.id_map != outs[name].id_map
        same = 1.0 - float(differ.float().mean())
        same_class = float((category_map(ref) == category_map(outs[name])).float().mean())
        parity_ok &= same >= 0.999
        print(f"{name}: speed-up over torch {ratio:.2f}x median, {ratio_min:.2f}x min, {ratio_cpu:.2f}x CPU time "
              f"(goal >= 1.3x: {'met' if ratio >= 1.3 else 'NOT met'})")
        worst = f", the largest {float(margin[differ].max()):.1e}" if differ.any() else ""
        print(f"{name}: identical panoptic-map pixels {100 * same:.4f}% of {ref.id_map.numel()} (goal >= 99.9%: "
              f"{'met' if same >= 0.999 else 'NOT met'}), identical category pixels {100 * same_class:.4f}%, "
              f"segments {len(outs[name].segments_info)} vs {len(ref.segments_info)}; torch's top-2 mask-logit "
              f"margin at the differing pixels: median {float(margin[differ].median()) if differ.any() else 0:.1e}"
              f"{worst} (over the whole map: median {float(margin.median()):.1e})")

    common = ["--threads", str(args.threads), "--threshold", str(args.threshold), "--opt-level", args.opt_level,
              "--checkpoint", str(checkpoint), "--export-dir", str(export_dir)]
    for backend in predictors:
        result, _ = run_child(["--child-memory", backend, *common])
        print(f"peak RSS, {backend} alone (child process, load + 2 images): {result['peak_rss_mib']:.0f} MiB")
    return 0 if parity_ok else 1


if __name__ == "__main__":
    sys.exit(main())
