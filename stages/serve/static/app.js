// The search page: plain JavaScript over the JSON API of stages/serve/app.py (no build step).
"use strict";

const PER_PAGE = 24;
const THUMB = 256; // grid thumbnails (longest side, px)
const SCENE = 512; // images of results and of the viewer
const VIEWER = 1024;
const CROP = 84; // crop tiles of the results (px)
const DRAG_MIN = 5; // a pointer move shorter than this is a click, not a drawn box

const $ = (id) => document.getElementById(id);
const state = {
  config: null,
  sel: { backbone: null, dataset: null, embedding: "model" },
  page: 0,
  image: null, // the open image: {image_id, width, height, boxes}
  upload: null, // {file, url, width, height}
  query: null, // {token, next, total, limit, rerun}
  selected: null, // object id of the clicked object
};

// ---------------------------------------------------------------- helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== null && value !== undefined) search.set(key, value);
  return search.toString();
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    let detail = body.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    throw new Error(detail || `${response.status} ${response.statusText}`);
  }
  return body;
}

function showStatus(message, kind = "error") {
  const box = $("status");
  box.textContent = message;
  box.className = `status ${kind}`;
  box.hidden = !message;
}

function picture(imageId, maxSide) {
  return `/images/${imageId}.jpg?${query({ backbone: state.sel.backbone, dataset: state.sel.dataset, max_side: maxSide })}`;
}

function k() {
  const value = parseInt($("k").value, 10);
  return Math.max(1, Math.min(state.config ? state.config.max_k : 100, Number.isFinite(value) ? value : 10));
}

// A box of an image (pixels) positioned in percent over that image's element.
// A stage keeps its image's aspect ratio, within the column and the window's height.
function fitStage(stage, width, height) {
  stage.style.aspectRatio = `${width} / ${height}`;
  stage.style.maxWidth = `min(640px, calc((100vh - 12rem) * ${(width / height).toFixed(4)}))`;
}

function boxStyle(node, box, width, height) {
  const [x1, y1, x2, y2] = box;
  node.style.left = `${(100 * x1) / width}%`;
  node.style.top = `${(100 * y1) / height}%`;
  node.style.width = `${(100 * (x2 - x1)) / width}%`;
  node.style.height = `${(100 * (y2 - y1)) / height}%`;
  return node;
}

// The crop of a box, shown by CSS alone: the image as a background, scaled and shifted.
function cropTile(src, box, width, height, size = CROP) {
  const [x1, y1, x2, y2] = box;
  const bw = Math.max(1, x2 - x1);
  const bh = Math.max(1, y2 - y1);
  const s = size / Math.max(bw, bh);
  const tile = el("div", { class: "crop" });
  const inner = el("div", { class: "crop-inner" });
  inner.style.width = `${bw * s}px`;
  inner.style.height = `${bh * s}px`;
  inner.style.backgroundImage = `url("${src}")`;
  inner.style.backgroundSize = `${width * s}px ${height * s}px`;
  inner.style.backgroundPosition = `${-x1 * s}px ${-y1 * s}px`;
  tile.append(inner);
  return tile;
}

// ---------------------------------------------------------------- selection
function catalogEntry() {
  return state.config.catalog.find((e) => e.backbone === state.sel.backbone && e.dataset === state.sel.dataset);
}

function fillSelect(select, values, current, labels = {}) {
  select.replaceChildren(...values.map((v) => el("option", { value: v }, labels[v] || v)));
  select.value = values.includes(current) ? current : values[0];
  select.disabled = values.length < 2;
  return select.value;
}

function refreshSelects() {
  const cat = state.config.catalog;
  const backbones = [...new Set(cat.map((e) => e.backbone))];
  state.sel.backbone = fillSelect($("backbone"), backbones, state.sel.backbone);
  const datasets = cat.filter((e) => e.backbone === state.sel.backbone).map((e) => e.dataset);
  state.sel.dataset = fillSelect($("dataset"), datasets, state.sel.dataset);
  const labels = { model: "trained", pretrained: "pretrained" };
  state.sel.embedding = fillSelect($("embedding"), catalogEntry().embeddings, state.sel.embedding, labels);
}

function onSelectionChange(which) {
  return () => {
    const before = { ...state.sel };
    state.sel[which] = $(which).value;
    refreshSelects();
    if (before.backbone !== state.sel.backbone || before.dataset !== state.sel.dataset) {
      state.page = 0;
      clearResults();
      if (location.hash.startsWith("#/image")) location.hash = "#/";
      else route();
    } else if (state.query && state.query.rerun) {
      state.query.rerun(); // same query, the other embedding
    }
  };
}

// ---------------------------------------------------------------- views
function showView(name) {
  for (const view of ["collection", "image", "upload", "metrics"]) $(`view-${view}`).hidden = view !== name;
  for (const nav of ["collection", "upload", "metrics"]) {
    $(`nav-${nav}`).classList.toggle("active", nav === name || (nav === "collection" && name === "image"));
  }
  $("main").classList.toggle("wide", name === "metrics");
  $("results").hidden = name === "metrics";
}

async function route() {
  showStatus("");
  const hash = location.hash || "#/";
  try {
    if (hash.startsWith("#/image/")) await showImage(parseInt(hash.slice(8), 10));
    else if (hash.startsWith("#/upload")) showUpload();
    else if (hash.startsWith("#/metrics")) await showMetrics();
    else await showCollection();
  } catch (err) {
    showStatus(err.message);
  }
}

async function showCollection() {
  showView("collection");
  const { backbone, dataset } = state.sel;
  const page = await api(`/api/images?${query({ backbone, dataset, page: state.page, per_page: PER_PAGE })}`);
  $("collection-summary").textContent = `${page.total} images of ${dataset}, indexed with ${backbone}. Open one to see its objects.`;
  $("grid").replaceChildren(
    ...page.images.map((im) =>
      el(
        "a",
        { class: "card", href: `#/image/${im.image_id}`, dataset: { imageId: im.image_id } },
        el("img", { src: picture(im.image_id, THUMB), alt: `image ${im.image_id}`, loading: "lazy" }),
        el("span", { class: "caption" }, `#${im.image_id}`, el("small", {}, `${im.objects} objects`)),
      ),
    ),
  );
  $("page-label").textContent = `Page ${page.page + 1} of ${page.pages}`;
  $("prev").disabled = page.page <= 0;
  $("next").disabled = page.page + 1 >= page.pages;
}

async function showImage(imageId) {
  showView("image");
  const { backbone, dataset } = state.sel;
  const image = await api(`/api/images/${imageId}?${query({ backbone, dataset })}`);
  state.image = image;
  $("image-title").textContent = `Image #${image.image_id}`;
  const stage = $("image-stage");
  const img = stage.querySelector("img");
  img.src = picture(image.image_id, VIEWER);
  fitStage(stage, image.width, image.height);
  drawObjects();
}

function drawObjects() {
  const image = state.image;
  const overlay = $("image-stage").querySelector(".overlay");
  overlay.classList.toggle("hide-objects", !$("show-objects").checked);
  // largest first, so that small objects lie on top
  const boxes = [...image.boxes].sort((a, b) => area(b.box) - area(a.box));
  overlay.replaceChildren(
    ...boxes.map((o) =>
      boxStyle(
        el("div", {
          class: `obj${o.object_id === state.selected ? " selected" : ""}`,
          dataset: { objectId: o.object_id },
          title: `object ${o.object_id}`,
        }),
        o.box,
        image.width,
        image.height,
      ),
    ),
  );
}

const area = (b) => (b[2] - b[0]) * (b[3] - b[1]);

// The smallest object of the open image under a point (pixels), or null.
function objectAt(x, y) {
  let best = null;
  for (const o of state.image.boxes) {
    const [x1, y1, x2, y2] = o.box;
    if (x >= x1 && x <= x2 && y >= y1 && y <= y2 && (!best || area(o.box) < area(best.box))) best = o;
  }
  return best;
}

// Clicks and drags on a stage (an image with an overlay): onClick(x, y), onBox(box), in image pixels.
function makeDrawable(stage, size, onClick, onBox, onHover) {
  let start = null;
  let rect = null;
  const toPixels = (event) => {
    const r = stage.getBoundingClientRect();
    const [w, h] = size();
    const x = Math.max(0, Math.min(w, ((event.clientX - r.left) / r.width) * w));
    const y = Math.max(0, Math.min(h, ((event.clientY - r.top) / r.height) * h));
    return [x, y];
  };
  stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    stage.setPointerCapture(event.pointerId);
    start = { client: [event.clientX, event.clientY], px: toPixels(event) };
  });
  stage.addEventListener("pointermove", (event) => {
    if (!start) {
      if (onHover) onHover(...toPixels(event));
      return;
    }
    const moved = Math.hypot(event.clientX - start.client[0], event.clientY - start.client[1]);
    if (moved < DRAG_MIN) return;
    const [x, y] = toPixels(event);
    const box = [Math.min(x, start.px[0]), Math.min(y, start.px[1]), Math.max(x, start.px[0]), Math.max(y, start.px[1])];
    if (!rect) {
      rect = el("div", { class: "drawn" });
      stage.querySelector(".overlay").append(rect);
    }
    boxStyle(rect, box, ...size());
    rect.dataset.box = box.join(",");
  });
  stage.addEventListener("pointerup", (event) => {
    if (!start) return;
    const moved = Math.hypot(event.clientX - start.client[0], event.clientY - start.client[1]);
    const begin = start.px;
    start = null;
    if (moved < DRAG_MIN || !rect) {
      if (rect) rect.remove();
      rect = null;
      onClick(...begin);
      return;
    }
    const box = rect.dataset.box.split(",").map(Number);
    rect = null;
    onBox(box);
  });
}

function clearDrawn(stage) {
  stage.querySelectorAll(".drawn").forEach((n) => n.remove());
}

function setupImageStage() {
  const stage = $("image-stage");
  makeDrawable(
    stage,
    () => [state.image.width, state.image.height],
    (x, y) => {
      const o = objectAt(x, y);
      if (!o) return;
      clearDrawn(stage);
      state.selected = o.object_id;
      drawObjects();
      searchBox(state.image, o.box, `object ${o.object_id} of image #${state.image.image_id}`);
    },
    (box) => {
      state.selected = null;
      drawObjects();
      stage.querySelector(".overlay").append(boxStyle(el("div", { class: "drawn done" }), box, state.image.width, state.image.height));
      searchBox(state.image, box, `a box drawn on image #${state.image.image_id}`);
    },
    (x, y) => {
      const o = objectAt(x, y);
      stage.querySelectorAll(".obj.hover").forEach((n) => n.classList.remove("hover"));
      if (o) stage.querySelector(`.obj[data-object-id="${o.object_id}"]`)?.classList.add("hover");
    },
  );
  stage.addEventListener("pointerleave", () => stage.querySelectorAll(".obj.hover").forEach((n) => n.classList.remove("hover")));
}

// ---------------------------------------------------------------- upload
function showUpload() {
  showView("upload");
  $("upload-limit").textContent = state.config.max_upload_mb;
}

function setupUpload() {
  const stage = $("upload-stage");
  const img = stage.querySelector("img");
  $("upload-file").addEventListener("change", () => {
    const file = $("upload-file").files[0];
    if (!file) return;
    showStatus("");
    if (file.size > state.config.max_upload_mb * 1024 * 1024) {
      showStatus(`This photo is ${(file.size / 1048576).toFixed(1)} MiB; the server accepts at most ${state.config.max_upload_mb} MiB.`);
      return;
    }
    if (state.upload) URL.revokeObjectURL(state.upload.url);
    const url = URL.createObjectURL(file);
    img.onload = () => {
      state.upload = { file, url, width: img.naturalWidth, height: img.naturalHeight };
      fitStage(stage, img.naturalWidth, img.naturalHeight);
      stage.hidden = false;
      $("upload-whole").disabled = false;
      clearDrawn(stage);
    };
    img.onerror = () => {
      // the browser cannot show it (e.g. TIFF): the server may still read it, as a whole photo
      state.upload = { file, url: null, width: 0, height: 0 };
      stage.hidden = true;
      $("upload-whole").disabled = false;
      showStatus("This browser cannot display the photo; it can still be searched as a whole.", "info");
    };
    img.src = url;
  });
  $("upload-whole").addEventListener("click", () => {
    if (state.upload) searchUpload(null, "the whole uploaded photo");
  });
  makeDrawable(
    stage,
    () => [state.upload.width, state.upload.height],
    () => {},
    (box) => {
      clearDrawn(stage);
      stage.querySelector(".overlay").append(boxStyle(el("div", { class: "drawn done" }), box, state.upload.width, state.upload.height));
      searchUpload(box, "a box drawn on the uploaded photo");
    },
  );
}

// ---------------------------------------------------------------- search and results
function clearResults() {
  state.query = null;
  $("hits").replaceChildren();
  $("query").hidden = true;
  $("more").hidden = true;
  $("results-info").textContent = "";
  $("results-empty").hidden = false;
}

function showQuery(tile, label) {
  const q = $("query");
  q.replaceChildren(tile, el("div", { class: "query-label" }, el("strong", {}, "Query"), el("span", {}, label)));
  q.hidden = false;
}

async function runSearch(request, tile, label, rerun) {
  showStatus("");
  $("results-info").textContent = "searching…";
  try {
    const result = await request();
    showQuery(tile(), label);
    $("hits").replaceChildren();
    $("results").scrollTop = 0;
    state.query = { token: result.token, rerun };
    addHits(result);
  } catch (err) {
    $("results-info").textContent = "";
    showStatus(err.message);
  }
}

function searchBox(image, box, label) {
  const request = () =>
    api("/api/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...state.sel, image_id: image.image_id, box, k: k(), exclude_image: $("exclude-image").checked }),
    });
  const tile = () => cropTile(picture(image.image_id, SCENE), box, image.width, image.height, 96);
  const rerun = () => runSearch(request, tile, label, rerun);
  rerun.fromImage = true;
  return rerun();
}

function searchUpload(box, label) {
  const upload = state.upload;
  const request = () =>
    api(
      `/api/search/upload?${query({ ...state.sel, k: k(), box: box ? box.map((v) => v.toFixed(1)).join(",") : null })}`,
      { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: upload.file },
    );
  const tile = () =>
    upload.url
      ? cropTile(upload.url, box || [0, 0, upload.width, upload.height], upload.width, upload.height, 96)
      : el("div", { class: "crop" }, "photo");
  const rerun = () => runSearch(request, tile, label, rerun);
  return rerun();
}

function hitCard(hit) {
  const src = picture(hit.image_id, SCENE);
  const scene = el(
    "a",
    { class: "scene", href: `#/image/${hit.image_id}`, title: `open image #${hit.image_id}` },
    el("img", { src, alt: `image ${hit.image_id}`, loading: "lazy" }),
    boxStyle(el("div", { class: "box" }), hit.box, hit.width, hit.height),
  );
  scene.style.aspectRatio = `${hit.width} / ${hit.height}`;
  scene.style.width = `${Math.round(120 * Math.min(1, hit.width / Math.max(1, hit.height)))}px`;
  scene.addEventListener("click", () => {
    state.selected = hit.object_id;
  });
  const [x1, y1, x2, y2] = hit.box;
  return el(
    "li",
    { class: "hit", dataset: { objectId: hit.object_id, imageId: hit.image_id, distance: hit.distance } },
    cropTile(src, hit.box, hit.width, hit.height),
    scene,
    el(
      "div",
      { class: "meta" },
      el("span", { class: "rank" }, `#${hit.rank}`),
      el("span", { class: "dist", title: "Euclidean distance between L2-normalised embeddings (0 to 2)" }, `d = ${hit.distance.toFixed(3)}`),
      el("small", {}, `object ${hit.object_id} · image #${hit.image_id} · ${Math.round(x2 - x1)}×${Math.round(y2 - y1)} px`),
    ),
  );
}

function addHits(result) {
  $("hits").append(...result.hits.map(hitCard));
  state.query.next = result.offset + result.hits.length;
  state.query.limit = result.limit;
  const shown = $("hits").children.length;
  const entry = `${result.backbone} · ${result.dataset} · ${result.embedding === "model" ? "trained" : "pretrained"}`;
  $("results-info").textContent = `${shown} of ${result.total.toLocaleString()} objects · ${entry} · ${result.took_ms} ms`;
  $("results-empty").hidden = shown > 0;
  $("more").hidden = state.query.next >= state.query.limit || result.hits.length === 0;
}

async function more() {
  if (!state.query) return;
  try {
    const result = await api("/api/more", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: state.query.token, offset: state.query.next, k: k() }),
    });
    addHits(result);
  } catch (err) {
    showStatus(err.message);
  }
}

// ---------------------------------------------------------------- metrics
const METRIC_COLUMNS = ["O-R@1", "O-R@5", "O-mAP", "I-R@1", "I-mAP"];

async function showMetrics() {
  showView("metrics");
  const { backbone, dataset } = state.sel;
  const data = await api(`/api/metrics?${query({ backbone, dataset })}`);
  const m = data.metrics;
  $("metrics-file").textContent = m ? `${data.file}: ${backbone} on ${dataset}` : `No ${data.file} yet: run \`dvc repro\`.`;
  const summary = [];
  const table = $("metrics-table");
  table.replaceChildren();
  if (m) {
    for (const [key, value] of Object.entries(m)) {
      if (value === null || typeof value !== "object") summary.push(el("div", { class: "fact" }, el("span", {}, key), el("strong", {}, String(value))));
    }
    const embeddings = ["model", "pretrained"].filter((e) => m[e] && typeof m[e] === "object");
    if (embeddings.length) {
      const subsets = Object.keys(m[embeddings[0]]);
      const head1 = el("tr", {}, el("th", { rowspan: 2 }, "queries"), el("th", { rowspan: 2, title: "number of queries" }, "n"));
      const head2 = el("tr");
      for (const col of METRIC_COLUMNS) {
        head1.append(el("th", { colspan: embeddings.length }, col));
        for (const e of embeddings) head2.append(el("th", { class: "sub" }, e === "model" ? "trained" : "pretrained"));
      }
      const body = subsets.map((s) => {
        const row = el("tr", {}, el("th", { class: "subset" }, s), el("td", {}, String(m[embeddings[0]][s]?.queries ?? "–")));
        for (const col of METRIC_COLUMNS) {
          const values = embeddings.map((e) => m[e][s]?.[col]);
          const best = Math.max(...values.filter((v) => typeof v === "number"));
          for (const v of values) {
            row.append(el("td", { class: typeof v === "number" && v === best && values.length > 1 ? "best" : "" }, typeof v === "number" ? v.toFixed(1) : "–"));
          }
        }
        return row;
      });
      table.append(el("thead", {}, head1, head2), el("tbody", {}, ...body));
    }
  }
  $("metrics-summary").replaceChildren(...summary);
  $("metrics-pictures").replaceChildren(
    ...data.pictures.map((name) =>
      el(
        "figure",
        {},
        el("img", { src: `/metrics/${encodeURIComponent(backbone)}/${encodeURIComponent(dataset)}/${encodeURIComponent(name)}`, alt: name }),
        el("figcaption", {}, name),
      ),
    ),
  );
}

// ---------------------------------------------------------------- start
async function start() {
  try {
    state.config = await api("/api/config");
  } catch (err) {
    showStatus(`The server did not answer: ${err.message}`);
    return;
  }
  if (!state.config.catalog.length) {
    showStatus("No built index: run `dvc repro`, then restart `python -m stages serve`.");
    return;
  }
  Object.assign(state.sel, state.config.default);
  $("k").value = state.config.k;
  $("k").max = state.config.max_k;
  refreshSelects();
  for (const which of ["backbone", "dataset", "embedding"]) $(which).addEventListener("change", onSelectionChange(which));
  $("prev").addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    showCollection().catch((err) => showStatus(err.message));
  });
  $("next").addEventListener("click", () => {
    state.page += 1;
    showCollection().catch((err) => showStatus(err.message));
  });
  $("show-objects").addEventListener("change", drawObjects);
  $("exclude-image").addEventListener("change", () => {
    if (state.query && state.query.rerun && state.query.rerun.fromImage) state.query.rerun();
  });
  $("more").addEventListener("click", more);
  setupImageStage();
  setupUpload();
  window.addEventListener("hashchange", route);
  await route();
  document.body.dataset.ready = "1";
}

start();
