"""The demo end to end on a handful of tiny scenes: every stage runs through the CLI, the
report's images all exist, and a re-run reuses what is there."""

import re

import pytest

from panoptic_detr.apps.demo import BASE_MODEL, Demo, DemoConfig


@pytest.mark.skipif(not BASE_MODEL.exists(), reason="the shipped base model is missing")
def test_demo_runs_every_stage_writes_a_complete_report_and_resumes(tmp_path, capsys):
    cfg = DemoConfig(out=tmp_path / "demo", images=10, size="96x128", epochs=1,
                     extra_train_args=["--set", "data.scales=[96]", "--set", "data.crop_resize=[96]",
                                       "--set", "data.crop_min=64", "--set", "data.crop_max=96",
                                       "--set", "eval.every=0", "--batch-size", "2", "--workers", "0", "--no-progress"])
    summary = Demo(cfg).run()
    names = [s["name"] for s in summary["stages"]]
    assert names == ["synth", "prepare", "train", "plot", "evaluate", "predict", "explain"]
    assert not any(s["skipped"] for s in summary["stages"])
    assert summary["started_from"].startswith("base model")
    panoptic = summary["metrics"]["panoptic"]
    assert {"All", "Things", "Stuff", "per_class"} <= set(panoptic)
    report = tmp_path / "demo" / "report.html"
    text = report.read_text()
    sources = re.findall(r'(?:src|href)="([^"#:]+)"', text)
    assert any(s.endswith(".png") or s.endswith(".jpg") for s in sources)
    missing = [s for s in sources if not (report.parent / s).exists()]
    assert missing == []
    assert "explain/explorer.html" in sources  # the report links the demo image's explorer
    assert "base model" in text
    out = capsys.readouterr().out
    assert "PQ" in out and str(report) in out

    again = Demo(cfg).run()  # everything is there: every stage but plot is skipped
    assert [s["skipped"] for s in again["stages"] if s["name"] != "plot"] == [True] * 6
    assert again["metrics"] == summary["metrics"]


@pytest.mark.skipif(not BASE_MODEL.exists(), reason="the shipped base model is missing")
def test_demo_refuses_scenes_made_with_the_other_exports(tmp_path):
    from panoptic_detr.errors import PanopticDetrError

    raw = tmp_path / "demo" / "raw"
    raw.mkdir(parents=True)
    (raw / "DONE").write_text("")  # a folder of a demo from before partial labels
    with pytest.raises(PanopticDetrError, match="add --fresh"):
        Demo(DemoConfig(out=tmp_path / "demo")).run()
    (raw / "DONE").write_text("partial-labels\n")
    with pytest.raises(PanopticDetrError, match="add --fresh"):
        Demo(DemoConfig(out=tmp_path / "demo", partial_labels=False)).run()
