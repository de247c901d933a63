"""explorer.html in a real browser: Debian's chromium driven by Playwright, from file://.

Skipped (one reason) when Playwright or a chromium binary is missing; CI sets
PANOPTIC_DETR_BROWSER_TESTS=required so that a missing browser fails instead. The browser
is found as $PANOPTIC_DETR_CHROMIUM, else `chromium` / `chromium-browser` on the PATH
(Playwright's own browser download is never used).
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from explain_support import SHORT_SIDE, THRESHOLD, scene, shared_model


def _chromium() -> str | None:
    path = os.environ.get("PANOPTIC_DETR_CHROMIUM")
    if path:
        return path if Path(path).is_file() else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[browser]')"
    if _chromium() is None:
        return "no chromium binary (apt-get install chromium, or set PANOPTIC_DETR_CHROMIUM)"
    return None


_REASON = _missing()
if _REASON is not None:
    if os.environ.get("PANOPTIC_DETR_BROWSER_TESTS") == "required":
        raise RuntimeError(f"browser tests required but {_REASON}")
    pytest.skip(f"explorer browser tests: {_REASON}", allow_module_level=True)


@functools.lru_cache(maxsize=None)
def explanation():
    from panoptic_detr.engine.explain import explain_image
    from panoptic_detr.engine.predict import Predictor

    predictor = Predictor(shared_model(), threshold=THRESHOLD, short_side=SHORT_SIDE, dedup=0.0)
    return explain_image(predictor, scene(), encoder_heads="all")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The explorer of `explanation()` (every encoder layer per head, decoder layers for the
    kept queries) open in chromium; records console messages and requests."""
    from playwright.sync_api import sync_playwright

    from panoptic_detr.viz.explorer import write_explorer
    from panoptic_detr.viz.explorer_data import ExplorerOptions

    root = tmp_path_factory.mktemp("explorer")
    path, _ = write_explorer(root / "explorer.html", explanation(), ExplorerOptions(encoder_heads="all"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1300, "height": 900})
        pg.messages, pg.requests = [], []
        pg.on("console", lambda m: pg.messages.append((m.type, m.text)))
        pg.on("pageerror", lambda e: pg.messages.append(("pageerror", str(e))))
        pg.on("request", lambda r: pg.requests.append(r.url))
        pg.goto(path.as_uri())
        pg.evaluate("window.explorer.ready")
        pg.shot_dir = root
        yield pg
        browser.close()


def click_image(page, canvas: str, x: float, y: float) -> None:
    """Click original-image pixel (x, y) on a canvas drawn at the image's size."""
    H, W = explanation().original_size
    box = page.locator(canvas).bounding_box()
    page.locator(canvas).click(position={"x": x * box["width"] / W, "y": y * box["height"] / H})


def cell_colours(page, canvas: str) -> np.ndarray:
    """The canvas colour at the centre of every valid token cell, [vh * vw, 3]."""
    return np.array(page.evaluate("""(id) => {
        const m = window.explorer.meta, g = document.getElementById(id).getContext('2d');
        const out = [];
        for (let r = 0; r < m.valid_size[0]; r++) for (let c = 0; c < m.valid_size[1]; c++) {
            const d = g.getImageData(Math.floor((c + 0.5) * m.cell_size[1]), Math.floor((r + 0.5) * m.cell_size[0]), 1, 1).data;
            out.push([d[0], d[1], d[2]]);
        }
        return out; }""", canvas))


def drawn_view(page, kind: str) -> dict:
    """window.explorer.drawn[kind], its values as a numpy array (None when nothing is drawn)."""
    d = page.evaluate(f"(() => {{ const d = window.explorer.drawn.{kind}; "
                      "return Object.assign({}, d, {values: d.values ? Array.from(d.values) : null}); })()")
    d["values"] = None if d["values"] is None else np.array(d["values"])
    return d


def lut_index(page, colours: np.ndarray) -> np.ndarray:
    lut = np.array(page.evaluate("window.explorer.meta.colormap"))
    return np.argmin(((colours[:, None, :] - lut[None]) ** 2).sum(-1), axis=1)


def valid_tokens(expl):
    vh, vw = expl.valid_size
    return (np.arange(vh)[:, None] * expl.feature_size[1] + np.arange(vw)[None, :]).reshape(-1)


def test_opens_offline_without_errors(page):
    assert page.evaluate("document.getElementById('status').textContent") == ""
    assert not [m for m in page.messages if m[0] in ("error", "pageerror", "warning")], page.messages
    assert page.requests and all(u == page.url for u in page.requests), page.requests  # the file itself only
    page.screenshot(path=str(page.shot_dir / "explorer.png"), full_page=True)
    assert (page.shot_dir / "explorer.png").stat().st_size > 10_000
    if os.environ.get("PANOPTIC_DETR_EXPLORER_SCREENSHOT"):  # keep a copy (e.g. for a review)
        shutil.copyfile(page.shot_dir / "explorer.png", os.environ["PANOPTIC_DETR_EXPLORER_SCREENSHOT"])


@pytest.mark.parametrize("layer,head", [(0, 1), (2, 5), (1, -1)])
def test_clicked_pixel_draws_the_captured_attention(page, layer, head):
    expl = explanation()
    x, y = 47.0, 95.0
    page.select_option("#enc-layer", value=str(layer + 1))  # the select shows layers from 1
    page.select_option("#enc-head", value="mean" if head < 0 else str(head + 1))
    page.check("input[name=enc-dir][value=row]")
    page.locator("#opacity").fill("100")  # the heat map opaque: its colours read back exactly
    click_image(page, "#enc-canvas", x, y)
    drawn = drawn_view(page, "encoder")
    tok = valid_tokens(expl)
    full_token = expl.token_at(x, y)
    assert tok[drawn["token"]] == full_token and drawn["layer"] == layer and drawn["head"] == head
    source = expl.encoder_layers[layer] if head < 0 else expl.encoder_heads[layer, head]
    truth = source.numpy()[full_token, tok]
    values = drawn["values"]
    assert np.abs(values - truth).max() <= truth.max() / 510 + 1e-7
    # the canvas itself: each cell's colour is the colour map at value / max
    expected = np.rint(255 * truth / truth.max())
    assert np.abs(lut_index(page, cell_colours(page, "enc-canvas")) - expected).max() <= 1

    page.check("input[name=enc-dir][value=col]")  # which tokens attend to it: the column
    drawn = drawn_view(page, "encoder")
    values = drawn["values"]
    column = source.numpy()[tok, full_token]
    row_peaks = source.numpy()[tok][:, tok].max(-1)  # each value carries its own row's scale
    assert drawn["direction"] == "col" and np.all(np.abs(values - column) <= row_peaks / 510 + 1e-7)
    assert not np.allclose(column, truth, atol=truth.max() / 50)  # the toggle really changed the map
    page.check("input[name=enc-dir][value=row]")


def test_selecting_a_query_shows_its_box_and_mask(page):
    from panoptic_detr.data.preprocess import resize_nearest
    from panoptic_detr.engine.inference import upsample_masks

    expl = explanation()
    H, W = expl.original_size
    q = int(expl.keep[1])
    page.locator(f"#query-table tr[data-query='{q}']").click()
    assert page.evaluate("window.explorer.selectedQuery()") == q
    drawn = drawn_view(page, "decoder")
    x0, y0, x1, y1 = expl.boxes_xyxy([q], clip=True)[0]
    bx0, by0, bx1, by1, t = drawn["box"]
    assert (bx0, by0, bx1, by1) == (int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))
    colour = page.evaluate(f"window.explorer.meta.queries[{q}].color")
    top = page.evaluate(f"Array.from(document.getElementById('dec-canvas').getContext('2d')"
                        f".getImageData({(bx0 + bx1) // 2}, {by0}, 1, 1).data).slice(0, 3)")
    assert top == colour  # the box's top edge is drawn where the box is
    truth = expl.decoder_layers[-1].numpy()[q, valid_tokens(expl)]
    values = drawn["values"]
    assert np.abs(values - truth).max() <= truth.max() / 510 + 1e-7
    # its mask: sigmoid of the logits at full resolution, as Python upsamples them
    prob = np.array(page.evaluate(f"Array.from(window.explorer.maskProbability({q}))")).reshape(H, W)
    k = expl.keep.tolist().index(q)
    ref = torch.sigmoid(resize_nearest(upsample_masks(expl.mask_logits[k:k + 1], expl.processed_size), (H, W)))[0]
    assert np.abs(prob - ref.numpy()).max() < 2e-3
    page.check("#mask-binary")
    changed = np.array(page.evaluate("""() => {
        const c = document.getElementById('mask-canvas'), g = c.getContext('2d');
        const a = g.getImageData(0, 0, c.width, c.height).data;
        const o = document.createElement('canvas'); o.width = c.width; o.height = c.height;
        const og = o.getContext('2d'); og.drawImage(window.explorer.image, 0, 0, c.width, c.height);
        const b = og.getImageData(0, 0, c.width, c.height).data;
        const out = []; for (let i = 0; i < a.length; i += 4) out.push(a[i] !== b[i] || a[i+1] !== b[i+1] || a[i+2] !== b[i+2]);
        return out; }""")).reshape(H, W)
    assert (changed == (ref.numpy() > 0.5)).mean() > 0.98
    page.uncheck("#mask-binary")
    # mask-head maps: one canvas per head
    assert page.locator("#mask-heads canvas").count() == expl.mask_attention.shape[1]


def test_a_query_not_kept_shows_its_last_layer_only(page):
    expl = explanation()
    q = next(i for i, s in enumerate(expl.states.state) if s in ("no-object", "threshold"))
    page.evaluate(f"window.explorer.selectQuery({q})")
    drawn = drawn_view(page, "decoder")
    assert page.locator("#dec-layer").is_disabled() and drawn["layer"] == expl.decoder_layers.shape[0] - 1
    truth = expl.decoder_attention.numpy()[q, valid_tokens(expl)]
    values = drawn["values"]
    assert np.abs(values - truth).max() <= truth.max() / 510 + 1e-7
    assert page.locator(f"#query-table tr[data-query='{q}']").count() == 1  # the list shows all queries now
    assert "duplicate" in page.locator("#query-table").inner_text()  # dedup's victims are listed as such


def test_clicking_a_segment_selects_its_query(page):
    from scipy.ndimage import distance_transform_edt

    expl = explanation()
    ids = expl.panoptic.id_map_numpy()
    heads = expl.states.segment_query()
    page.evaluate("window.explorer.selectQuery(0)")
    for seg in expl.panoptic.segments_info:
        inside = distance_transform_edt(ids == seg["id"])
        y, x = np.unravel_index(np.argmax(inside), ids.shape)  # the pixel deepest inside the segment
        page.locator("#pan-canvas").scroll_into_view_if_needed()
        click_image(page, "#pan-canvas", x + 0.5, y + 0.5)
        assert page.evaluate("window.explorer.selectedQuery()") == heads[seg["id"]]
        tip = page.locator("#pan-tip").inner_text()
        assert f"segment {seg['id']}:" in tip and f"query {heads[seg['id']]}," in tip and f"area {seg['area']} px" in tip


def test_no_console_message_after_every_interaction(page):
    """Runs last: all the clicking above logged no error or warning either."""
    assert not [m for m in page.messages if m[0] in ("error", "pageerror", "warning")], page.messages
    assert all(u == page.url for u in page.requests), page.requests
