"""The demo report's tables and explain section (viz/report.py)."""

from PIL import Image

from panoptic_detr.viz.explain_figures import FIGURES
from panoptic_detr.viz.report import _ap_table, _explain_section, _per_class_table


def test_empty_ap_buckets_print_a_dash():
    html = _ap_table({"bbox": {"AP": 0.25, "AP50": 0.5, "APs": -1.0, "APm": 0.125, "APl": float("nan")}})
    assert "<td>25.0</td><td>50.0</td><td>-</td><td>12.5</td><td>-</td>" in html
    assert "-100" not in html and "nan" not in html


def test_classes_absent_from_the_split_are_listed_as_absent():
    per_class = {
        "brick": {"pq": 0.5, "sq": 0.8, "rq": 0.625, "tp": 5, "fp": 2, "fn": 4},
        "pipe": {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0},
        "tank": {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 3, "fn": 0},
        "sky": {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 2},  # present, all missed: a real 0
    }
    html = _per_class_table(per_class)
    assert "<td>brick</td><td>50.0</td><td>80.0</td><td>62.5</td>" in html
    assert '<td>pipe</td><td colspan="6">absent from the split</td>' in html
    assert '<td>tank</td><td colspan="6">absent from the split, 3 false positives</td>' in html
    assert "<td>sky</td><td>0.0</td>" in html


def test_explain_section_uses_titles_and_links_the_explorer(tmp_path):
    run = tmp_path
    folder = run / "explain"
    folder.mkdir()
    for key in ("encoder", "masks"):
        Image.new("RGB", (4, 4)).save(folder / FIGURES[key][0])
    html = _explain_section(folder, run)
    assert "explorer" not in html  # no explorer written: no link
    (folder / "explorer.html").write_text("<html></html>")
    html = _explain_section(folder, run)
    assert '<a href="explain/explorer.html">' in html
    for key in ("encoder", "masks"):
        assert f"<figcaption>{FIGURES[key][1]}</figcaption>" in html
        assert f'src="explain/{FIGURES[key][0]}"' in html
