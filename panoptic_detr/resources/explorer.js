// The explain explorer: plain JavaScript, no library, no network. The page embeds its data
// (panoptic_detr/viz/explorer_data.py): a JSON meta block and compressed typed arrays that
// are inflated here with the browser's DecompressionStream. window.explorer is the page's
// data API (used by the browser tests and handy from the console).
"use strict";
(function () {
  const meta = JSON.parse(document.getElementById("explorer-meta").textContent);
  const packed = JSON.parse(document.getElementById("explorer-blobs").textContent);
  const $ = (id) => document.getElementById(id);
  const [H, W] = meta.image_size;
  const [vh, vw] = meta.valid_size;
  const [cellH, cellW] = meta.cell_size;
  const T = vh * vw;
  const NH = meta.nheads;
  const LUT = meta.colormap;
  const A = {};  // decoded arrays
  const image = new Image();
  const state = {
    enc: { layer: meta.encoder_layers - 1, head: -1, direction: "row", token: null, opacity: 0.6, pinned: false },
    dec: { layer: meta.decoder_layers - 1, head: -1 },
    query: null, binary: false, filter: "kept",
  };
  const drawn = { encoder: null, decoder: null, mask: null };

  // ------------------------------------------------------------------ data
  const TYPES = { uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array, float32: Float32Array, int32: Int32Array };
  async function inflate(blob) {
    const bin = atob(blob.data);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    const buf = await new Response(stream).arrayBuffer();
    return { shape: blob.shape, data: new TYPES[blob.dtype](buf) };
  }
  async function load() {
    for (const [name, blob] of Object.entries(packed)) A[name] = await inflate(blob);
    await new Promise((ok, fail) => { image.onload = ok; image.onerror = fail; image.src = meta.image; });
  }

  // encoder map of valid token t: its row (what it attends to) or its column (who attends to it)
  function encoderMap(layer, head, t, direction) {
    let q, s, base;
    if (head < 0) {
      q = A.enc_mean.data; s = A.enc_mean_scale.data; base = layer * T;
    } else {
      const li = meta.encoder_head_layers.indexOf(layer);
      if (li < 0) return null;
      q = A.enc_heads.data; s = A.enc_heads_scale.data; base = (li * NH + head) * T;
    }
    const out = new Float32Array(T);
    if (direction === "col") {
      for (let i = 0; i < T; i++) out[i] = q[(base + i) * T + t] * s[base + i] / 255;
    } else {
      const k = s[base + t] / 255;
      for (let j = 0; j < T; j++) out[j] = q[(base + t) * T + j] * k;
    }
    return out;
  }
  function storedIndex(query) { return meta.stored_queries.indexOf(query); }
  function decoderMap(query, layer, head) {
    const si = storedIndex(query);
    const out = new Float32Array(T);
    if (si < 0) {
      if (layer !== meta.decoder_layers - 1 || head >= 0) return null;
      const k = A.dec_last_scale.data[query] / 255;
      for (let j = 0; j < T; j++) out[j] = A.dec_last.data[query * T + j] * k;
      return out;
    }
    const m = (si * meta.decoder_layers + layer) * (NH + 1) + (head < 0 ? NH : head);
    const k = A.dec_full_scale.data[m] / 255;
    for (let j = 0; j < T; j++) out[j] = A.dec_full.data[m * T + j] * k;
    return out;
  }
  function maskHeadMap(query, head) {
    const si = storedIndex(query);
    if (si < 0 || !A.mask_att) return null;
    const m = si * NH + head;
    const k = A.mask_att_scale.data[m] / 255;
    const out = new Float32Array(T);
    for (let j = 0; j < T; j++) out[j] = A.mask_att.data[m * T + j] * k;
    return out;
  }
  // sigmoid of the mask logits at full resolution: bilinear on the stride-4 cells to the
  // network input (the panoptic inference's upsampling), then its nearest resize
  function maskProbability(query) {
    const k = meta.keep.indexOf(query);
    if (k < 0 || !A.mask_logits) return null;
    const [ch, cw] = meta.mask_cells;
    const [h, w] = meta.processed_size;
    const official = meta.geometry === "official";
    const src = (p, n, cells) => Math.min(Math.max((p + 0.5) * (official ? cells / n : 0.25) - 0.5, 0), cells - 1);
    const L = A.mask_logits.data, base = k * ch * cw, step = meta.mask_logit_step;
    const colW = meta.cols.map((x) => src(x, w, cw));
    const out = new Float32Array(W * H);
    for (let Y = 0; Y < H; Y++) {
      const sy = src(meta.rows[Y], h, ch), y0 = Math.floor(sy), y1 = Math.min(y0 + 1, ch - 1), fy = sy - y0;
      for (let X = 0; X < W; X++) {
        const sx = colW[X], x0 = Math.floor(sx), x1 = Math.min(x0 + 1, cw - 1), fx = sx - x0;
        const top = L[base + y0 * cw + x0] * (1 - fx) + L[base + y0 * cw + x1] * fx;
        const bot = L[base + y1 * cw + x0] * (1 - fx) + L[base + y1 * cw + x1] * fx;
        out[Y * W + X] = 1 / (1 + Math.exp(-(top * (1 - fy) + bot * fy) * step));
      }
    }
    return out;
  }
  function tokenAt(x, y) {
    const r = Math.min(Math.max(Math.floor(y / cellH), 0), vh - 1);
    const c = Math.min(Math.max(Math.floor(x / cellW), 0), vw - 1);
    return r * vw + c;
  }
  function segmentAt(x, y) {
    if (!A.id_map) return null;
    const X = Math.min(Math.max(Math.floor(x), 0), W - 1), Y = Math.min(Math.max(Math.floor(y), 0), H - 1);
    const id = A.id_map.data[Y * W + X];
    return meta.segments.find((s) => s.id === id) || null;
  }

  // ------------------------------------------------------------------ drawing
  // every view reads its pixels back (blending, the tests): CPU-backed canvases
  const context = (c) => c.getContext("2d", { willReadFrequently: true });
  function setupCanvas(id) {
    const c = $(id);
    c.width = W; c.height = H;
    return context(c);
  }
  function heatCanvas(values, max) {
    const off = document.createElement("canvas");
    off.width = vw; off.height = vh;
    const g = off.getContext("2d");
    const img = g.createImageData(vw, vh);
    for (let i = 0; i < T; i++) {
      const c = LUT[Math.min(255, Math.round(255 * values[i] / (max || 1)))];
      img.data.set([c[0], c[1], c[2], 255], 4 * i);
    }
    g.putImageData(img, 0, 0);
    return off;
  }
  function maxOf(values) { let m = 0; for (const v of values) if (v > m) m = v; return m; }
  function drawHeat(ctx, values, opacity) {
    ctx.drawImage(image, 0, 0, W, H);
    if (!values) return;
    ctx.save();
    ctx.globalAlpha = opacity;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(heatCanvas(values, maxOf(values)), 0, 0, vw * cellW, vh * cellH);
    ctx.restore();
  }
  function drawGrid(ctx) {
    ctx.save();
    ctx.strokeStyle = "rgba(255,255,255,0.25)";
    ctx.lineWidth = Math.max(1, W / 800);
    ctx.beginPath();
    for (let c = 0; c <= vw; c++) { ctx.moveTo(c * cellW, 0); ctx.lineTo(c * cellW, vh * cellH); }
    for (let r = 0; r <= vh; r++) { ctx.moveTo(0, r * cellH); ctx.lineTo(vw * cellW, r * cellH); }
    ctx.stroke();
    ctx.restore();
  }
  function eventPixel(e, canvas) {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * W / r.width, (e.clientY - r.top) * H / r.height];
  }
  const rgb = (c, a) => (a === undefined ? `rgb(${c[0]},${c[1]},${c[2]})` : `rgba(${c[0]},${c[1]},${c[2]},${a})`);

  function drawEncoder() {
    const ctx = context($("enc-canvas"));
    const e = state.enc;
    const values = e.token === null ? null : encoderMap(e.layer, e.head, e.token, e.direction);
    drawHeat(ctx, values, e.opacity);
    drawGrid(ctx);
    drawn.encoder = { layer: e.layer, head: e.head, direction: e.direction, token: e.token, values };
    if (e.token === null) { $("enc-info").textContent = "Hover or click the image."; return; }
    const r = Math.floor(e.token / vw), c = e.token % vw;
    ctx.save();
    ctx.strokeStyle = "#00e5ff"; ctx.lineWidth = Math.max(2, W / 300);
    ctx.strokeRect(c * cellW, r * cellH, cellW, cellH);
    ctx.restore();
    const what = e.direction === "row" ? `what token (row ${r}, column ${c}) attends to`
      : `which tokens attend to token (row ${r}, column ${c})`;
    const head = e.head < 0 ? "mean over heads" : `head ${e.head + 1}`;
    $("enc-info").textContent = values
      ? `${what}: layer ${e.layer + 1}, ${head}; peak ${maxOf(values).toExponential(2)}` + (e.pinned ? " (pinned: double-click to follow the mouse again)" : "")
      : `layer ${e.layer + 1} is stored averaged over the heads only (explain --explorer-heads all stores every head)`;
  }

  function drawBox(ctx, box, color) {
    const x0 = Math.floor(Math.min(Math.max(box[0], 0), W)), y0 = Math.floor(Math.min(Math.max(box[1], 0), H));
    const x1 = Math.ceil(Math.min(Math.max(box[2], 0), W)), y1 = Math.ceil(Math.min(Math.max(box[3], 0), H));
    const t = Math.max(2, Math.round(W / 300));
    ctx.fillStyle = rgb(color);
    ctx.fillRect(x0, y0, x1 - x0, t); ctx.fillRect(x0, y1 - t, x1 - x0, t);
    ctx.fillRect(x0, y0, t, y1 - y0); ctx.fillRect(x1 - t, y0, t, y1 - y0);
    return [x0, y0, x1, y1, t];
  }
  function drawDecoder() {
    const ctx = context($("dec-canvas"));
    const q = state.query;
    if (q === null) { ctx.drawImage(image, 0, 0, W, H); drawn.decoder = null; return; }
    const row = meta.queries[q];
    const values = decoderMap(q, state.dec.layer, state.dec.head);
    drawHeat(ctx, values, state.enc.opacity);
    const box = drawBox(ctx, row.box, row.color);
    drawn.decoder = { query: q, layer: state.dec.layer, head: state.dec.head, values, box };
    const head = state.dec.head < 0 ? "mean over heads" : `head ${state.dec.head + 1}`;
    $("dec-info").textContent = values
      ? `query ${q}: ${row.name} ${row.score.toFixed(3)} (${row.state}: ${STATE_WORDS[row.state]}); cross-attention of decoder layer ${state.dec.layer + 1}, ${head}`
      : `query ${q}: only the last layer's mean is stored for queries that were not kept (explain --explorer-queries all stores them all)`;
    drawMask(q, row);
    drawMaskHeads(q);
  }
  function drawMask(q, row) {
    const ctx = context($("mask-canvas"));
    ctx.drawImage(image, 0, 0, W, H);
    const prob = maskProbability(q);
    drawn.mask = prob ? { query: q, binary: state.binary } : null;
    $("mask-info").textContent = prob ? (state.binary ? "mask: sigmoid > 0.5" : "mask: sigmoid of the mask logits")
      : "no mask: the mask head runs for the kept queries only";
    if (!prob) return;
    const img = ctx.getImageData(0, 0, W, H);
    for (let i = 0; i < W * H; i++) {
      const p = state.binary ? (prob[i] > 0.5 ? 1 : 0) : prob[i];
      const c = state.binary ? row.color : LUT[Math.round(255 * p)];
      const a = state.binary ? 0.65 * p : 0.85;
      for (let k = 0; k < 3; k++) img.data[4 * i + k] = Math.round((1 - a) * img.data[4 * i + k] + a * c[k]);
    }
    ctx.putImageData(img, 0, 0);
  }
  function drawMaskHeads(q) {
    const box = $("mask-heads");
    box.textContent = "";
    const maps = [];
    for (let h = 0; h < NH; h++) maps.push(maskHeadMap(q, h));
    if (!maps[0]) { box.textContent = "mask-head maps: stored for the kept queries"; return; }
    const max = Math.max(...maps.map(maxOf));  // one softmax over heads x positions: one scale
    maps.forEach((m, h) => {
      const fig = document.createElement("figure");
      const c = heatCanvas(m, max);
      c.className = "pixelated";
      fig.append(c);
      const cap = document.createElement("figcaption");
      cap.textContent = `head ${h + 1}`;
      fig.append(cap);
      box.append(fig);
    });
  }

  function drawPanoptic() {
    const ctx = setupCanvas("pan-canvas");
    ctx.drawImage(image, 0, 0, W, H);
    if (!A.id_map) return;
    const img = ctx.getImageData(0, 0, W, H);
    const colors = {};
    meta.segments.forEach((s) => { colors[s.id] = s.color; });
    const ids = A.id_map.data;
    for (let i = 0; i < W * H; i++) {
      const c = colors[ids[i]];
      if (!c) continue;
      const edge = (i % W > 0 && ids[i - 1] !== ids[i]) || (i >= W && ids[i - W] !== ids[i]);
      const a = edge ? 1 : 0.5;
      for (let k = 0; k < 3; k++) img.data[4 * i + k] = Math.round((1 - a) * img.data[4 * i + k] + a * (edge ? 255 : c[k]));
    }
    ctx.putImageData(img, 0, 0);
  }

  // ------------------------------------------------------------------ queries view
  const STATE_WORDS = meta.state_words;
  function queryTable() {
    const t = $("query-table");
    t.textContent = "";
    const head = t.insertRow();
    ["query", "class", "score", "state"].forEach((h) => { const th = document.createElement("th"); th.textContent = h; head.append(th); });
    for (const row of meta.queries) {
      if (state.filter === "kept" && meta.keep.indexOf(row.q) < 0) continue;
      const tr = t.insertRow();
      tr.dataset.query = row.q;
      tr.className = "state-" + row.state + (row.q === state.query ? " selected" : "");
      const name = row.state === "no-object" ? `no object (best object: ${row.object_label} ${row.object_score.toFixed(2)})` : row.name;
      [row.q, name, row.score.toFixed(3), row.state].forEach((v, i) => {
        const td = tr.insertCell(); td.textContent = v;
        if (i === 1) td.style.borderLeft = `6px solid ${rgb(row.color)}`;
        if (i === 3) td.title = STATE_WORDS[row.state];
      });
      tr.addEventListener("click", () => selectQuery(row.q));
    }
  }
  function drawQuerySlots() {
    const ctx = setupCanvas("slots-canvas");
    ctx.globalAlpha = 0.35; ctx.drawImage(image, 0, 0, W, H); ctx.globalAlpha = 1;
    const r = Math.max(3, W / 150);
    for (const row of meta.queries) {
      const [cx, cy] = row.cxcywh;
      ctx.beginPath(); ctx.arc(cx * W, cy * H, row.q === state.query ? 1.8 * r : r, 0, 2 * Math.PI);
      ctx.fillStyle = rgb(row.size_color); ctx.fill();
      ctx.lineWidth = row.q === state.query ? 3 : 1; ctx.strokeStyle = meta.keep.indexOf(row.q) >= 0 ? "#000" : "#fff";
      ctx.stroke();
    }
  }
  function nearestSlot(x, y) {
    let best = null, d = Infinity;
    for (const row of meta.queries) {
      const dd = (row.cxcywh[0] * W - x) ** 2 + (row.cxcywh[1] * H - y) ** 2;
      if (dd < d) { d = dd; best = row.q; }
    }
    return best;
  }
  // box_size_colors of viz/queries.py: green (small) into red (wide) / blue (tall)
  function sizeColor(w, h) {
    const s = Math.min(Math.max(Math.sqrt(Math.max(w, 0) * Math.max(h, 0)) / 0.5, 0), 1);
    let hor = Math.max(w, 0) / Math.max(Math.max(w, 0) + Math.max(h, 0), 1e-12);
    hor = Math.min(Math.max((hor - 0.5) * 2 + 0.5, 0), 1);
    const G = [0.10, 0.70, 0.15], R = [0.90, 0.10, 0.10], B = [0.10, 0.25, 0.95];
    return G.map((g, k) => Math.round(255 * Math.min(Math.max((1 - s) * g + s * (hor * R[k] + (1 - hor) * B[k]), 0), 1)));
  }
  function drawDataset() {
    if (!A.dataset_boxes) return;
    const [N, Q] = A.dataset_boxes.shape;
    const box = $("dataset-slots");
    box.textContent = "";
    const D = A.dataset_boxes.data;
    for (let q = 0; q < Math.min(Q, meta.num_queries); q++) {
      const c = document.createElement("canvas");
      c.width = c.height = 90; c.title = `query ${q}`; c.dataset.query = q;
      const g = c.getContext("2d");
      g.fillStyle = q === state.query ? "#fff3c4" : "#f4f4f4"; g.fillRect(0, 0, 90, 90);
      for (let n = 0; n < N; n++) {
        const o = (n * Q + q) * 4;
        g.fillStyle = rgb(sizeColor(D[o + 2], D[o + 3]), 0.75);
        g.fillRect(D[o] * 90 - 1.5, D[o + 1] * 90 - 1.5, 3, 3);
      }
      g.fillStyle = "#333"; g.font = "10px sans-serif"; g.fillText(String(q), 3, 11);
      c.addEventListener("click", () => selectQuery(q));
      box.append(c);
    }
  }

  // ------------------------------------------------------------------ interaction
  function selectQuery(q) {
    state.query = q;
    if (meta.keep.indexOf(q) < 0 && state.filter === "kept") { state.filter = "all"; $("dec-filter").value = "all"; }
    const stored = storedIndex(q) >= 0;
    $("dec-layer").disabled = $("dec-head").disabled = !stored;
    if (!stored) { state.dec.layer = meta.decoder_layers - 1; state.dec.head = -1; syncDecoderControls(); }
    queryTable(); drawDecoder(); drawQuerySlots(); drawDataset();
  }
  // the selects' values are what they show: layers and heads from 1, "mean"
  const fromOption = (v) => (v === "mean" ? -1 : +v - 1);
  const toOption = (i) => (i < 0 ? "mean" : String(i + 1));
  function syncDecoderControls() {
    $("dec-layer").value = toOption(state.dec.layer); $("dec-head").value = toOption(state.dec.head);
  }
  function fillSelect(id, n, withMean, selected, label) {
    const s = $(id);
    if (withMean) s.add(new Option("mean", "mean"));
    for (let i = 0; i < n; i++) s.add(new Option(label(i), toOption(i)));
    s.value = toOption(selected);
  }
  function bindControls() {
    fillSelect("enc-layer", meta.encoder_layers, false, state.enc.layer,
      (i) => toOption(i) + (meta.encoder_head_layers.indexOf(i) < 0 ? " (mean only)" : ""));
    fillSelect("enc-head", NH, true, -1, toOption);
    fillSelect("dec-layer", meta.decoder_layers, false, state.dec.layer, toOption);
    fillSelect("dec-head", NH, true, -1, toOption);
    $("enc-layer").onchange = (e) => { state.enc.layer = fromOption(e.target.value); drawEncoder(); };
    $("enc-head").onchange = (e) => { state.enc.head = fromOption(e.target.value); drawEncoder(); };
    document.querySelectorAll("input[name=enc-dir]").forEach((r) => {
      r.onchange = (e) => { state.enc.direction = e.target.value; drawEncoder(); };
    });
    $("opacity").oninput = (e) => { state.enc.opacity = +e.target.value / 100; drawEncoder(); drawDecoder(); };
    $("dec-layer").onchange = (e) => { state.dec.layer = fromOption(e.target.value); drawDecoder(); };
    $("dec-head").onchange = (e) => { state.dec.head = fromOption(e.target.value); drawDecoder(); };
    $("dec-filter").onchange = (e) => { state.filter = e.target.value; queryTable(); };
    $("mask-binary").onchange = (e) => { state.binary = e.target.checked; if (state.query !== null) drawDecoder(); };
    const enc = $("enc-canvas");
    enc.addEventListener("mousemove", (e) => {
      if (state.enc.pinned) return;
      const t = tokenAt(...eventPixel(e, enc));
      if (t !== state.enc.token) { state.enc.token = t; drawEncoder(); }
    });
    enc.addEventListener("click", (e) => {
      state.enc.token = tokenAt(...eventPixel(e, enc)); state.enc.pinned = true; drawEncoder();
    });
    enc.addEventListener("dblclick", () => { state.enc.pinned = false; });
    bindPanoptic();
    $("slots-canvas").addEventListener("click", (e) => selectQuery(nearestSlot(...eventPixel(e, $("slots-canvas")))));
  }
  function bindPanoptic() {
    const pan = $("pan-canvas"), tip = $("pan-tip");
    pan.addEventListener("mousemove", (e) => {
      const s = segmentAt(...eventPixel(e, pan));
      tip.textContent = s ? `segment ${s.id}: ${s.name}, score ${s.score.toFixed(3)}, query ${s.query}, area ${s.area} px` : "void (no segment)";
    });
    pan.addEventListener("click", (e) => {
      const s = segmentAt(...eventPixel(e, pan));
      if (s && s.query >= 0) { selectQuery(s.query); $("decoder").scrollIntoView({ behavior: "instant" }); }
    });
  }

  async function main() {
    await load();
    ["enc-canvas", "dec-canvas", "mask-canvas"].forEach(setupCanvas);
    bindControls();
    drawPanoptic();
    const first = meta.keep.length ? meta.keep.slice().sort((a, b) => meta.queries[b].score - meta.queries[a].score)[0] : 0;
    state.enc.token = tokenAt(W / 2, H / 2);
    drawEncoder();
    selectQuery(first);
    $("status").textContent = "";
  }
  window.explorer = {
    meta, state, drawn, image, encoderMap, decoderMap, maskHeadMap, maskProbability, tokenAt, segmentAt, selectQuery,
    selectedQuery: () => state.query,
    ready: main().catch((err) => { $("status").textContent = "error: " + err; throw err; }),
  };
})();
