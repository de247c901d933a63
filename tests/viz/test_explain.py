"""`panoptic-detr explain` and `explain-queries` end to end on a saved tiny checkpoint."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explain_support import FIRING, SHORT_SIDE, THRESHOLD, shared_model, scene
from panoptic_detr.cli import main
from panoptic_detr.commands._explain_output import images_of
from panoptic_detr.viz.explain_figures import FIGURES
from panoptic_detr.viz.html import referenced_images


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from panoptic_detr.model.checkpoint import save_model

    root = tmp_path_factory.mktemp("explain")
    ckpt = root / "tiny.pth"
    save_model(ckpt, shared_model())
    images = root / "images"
    images.mkdir()
    Image.fromarray(scene()).save(images / "a.png")
    Image.fromarray(scene(seed=1)[:, ::-1]).save(images / "b.jpg")
    return root, ckpt, images


def test_explain_writes_all_figures_and_an_offline_page(workspace, capsys):
    root, ckpt, images = workspace
    out = root / "out"
    assert main(["explain-queries", str(ckpt), str(images), "--out", str(root / "qb"), "--short-side", "96",
                 "--quiet", "--dpi", "30"]) == 0
    code = main(["explain", str(ckpt), str(images / "a.png"), "--out", str(out), "--threshold", str(THRESHOLD),
                 "--short-side", str(SHORT_SIDE), "--queries", "8", "--points", "20,20", "150,100", "--dpi", "40",
                 "--max-images", "3", "--explorer-query-boxes", str(root / "qb")])
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f for f, _, _ in FIGURES.values()] + ["index.html", "explorer.html"])
    for f, _, _ in FIGURES.values():
        with Image.open(out / f) as im:
            assert im.format == "PNG" and min(im.size) > 150
    page = (out / "index.html").read_text()
    srcs = referenced_images(page)
    assert sorted(srcs) == sorted(f for f, _, _ in FIGURES.values())
    for s in srcs:
        assert not Path(s).is_absolute() and (out / s).is_file()
    assert "http://" not in page and "https://" not in page  # nothing remote: works offline
    for _, heading, _ in FIGURES.values():
        assert heading in page
    for q in FIRING:  # the detected objects are listed
        assert f"<td>{q}</td>" in page
    assert 'href="explorer.html"' in page
    explorer = (out / "explorer.html").read_text(encoding="utf-8")
    assert "http://" not in explorer and "https://" not in explorer
    for f, _, _ in FIGURES.values():  # the explorer links the static figures
        assert f'href="{f}"' in explorer
    assert "over 2 image(s) (explain-queries output" in explorer  # the slots over explain-queries' images
    captured = capsys.readouterr()
    assert "explorer.html" in captured.err and "error <= 1/510" in captured.err  # its size report
    # the query figure used both images of the folder plus crops of the image
    assert "plus 1 crop of this image" in page
    assert captured.out.strip().endswith("index.html")


def test_explain_refuses_bad_input(workspace, capsys):
    root, ckpt, images = workspace
    base = ["explain", str(ckpt), str(images / "a.png"), "--short-side", str(SHORT_SIDE)]
    assert main(base + ["--out", str(root / "bad1"), "--points", "5000,10"]) == 2
    assert "outside the 200 x 150 image" in capsys.readouterr().err
    assert not (root / "bad1").exists()
    with pytest.raises(SystemExit):
        main(base + ["--out", str(root / "bad2"), "--points", "12"])
    capsys.readouterr()
    (root / "exists").mkdir()
    assert main(base + ["--out", str(root / "exists")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--overwrite" in err and "Traceback" not in err
    assert main(["explain", str(ckpt), str(root / "missing.png"), "--out", str(root / "bad3")]) == 2
    capsys.readouterr()
    assert main(base + ["--out", str(root / "bad4"), "--explorer-query-boxes", str(images)]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") and "query_boxes.npz" in last and "Traceback" not in err
    assert not (root / "bad4").exists()


def test_explain_queries_over_a_folder(workspace, capsys):
    root, ckpt, images = workspace
    out = root / "queries"
    assert main(["explain-queries", str(ckpt), str(images), "--out", str(out), "--queries", "6",
                 "--short-side", "96", "--quiet", "--dpi", "40"]) == 0
    fig = FIGURES["queries"][0]
    assert (out / fig).is_file() and (out / "index.html").is_file()
    assert referenced_images((out / "index.html").read_text()) == [fig]
    data = np.load(out / "query_boxes.npz")
    assert data["boxes"].shape == (2, 20, 4) and data["scores"].shape == (2, 20)
    assert [Path(p).name for p in data["images"]] == ["a.png", "b.jpg"]


def test_images_of_a_prepared_dataset(tmp_path):
    from panoptic_detr.errors import PanopticDetrError

    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "dataset.yaml").write_text("name: x\n")
    Image.fromarray(scene()).save(tmp_path / "images" / "val" / "x.png")
    assert [p.name for p in images_of(tmp_path, "val")] == ["x.png"]
    with pytest.raises(PanopticDetrError, match="no split 'train'"):
        images_of(tmp_path, "train")
    with pytest.raises(PanopticDetrError, match="not found"):
        images_of(tmp_path / "nope")
