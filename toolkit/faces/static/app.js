// The search page: plain DOM, no build step. Every value from the API goes in through
// textContent or attributes, never innerHTML, so catalog text cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { photo: null, last: null, product: null, shopper: null };

// -- talking to the API -------------------------------------------------------------------

function options() {
  const filters = {};
  for (const select of document.querySelectorAll("#facet-menus select")) {
    if (select.value) filters[select.dataset.field] = select.value;
  }
  const number = (el) => (el.value.trim() === "" ? null : Number(el.value));
  return {
    k: Number($("k").value),
    filters,
    price_min: number($("price-min")),
    price_max: number($("price-max")),
    min_score: number($("min-score")),
  };
}

async function call(url, init) {
  const response = await fetch(url, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
  return body;
}

function searchText(text, opts) {
  return call("/api/search", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text, ...withoutNulls(opts) }),
  });
}

function searchPhoto(photo, text, opts) {
  const form = new FormData();
  form.append("file", photo, photo.name || "photo");
  if (text) form.append("text", text);
  form.append("k", String(opts.k));
  form.append("filters", JSON.stringify(opts.filters));
  for (const key of ["price_min", "price_max", "min_score"]) {
    if (opts[key] !== null) form.append(key, String(opts[key]));
  }
  return call("/api/search/image", { method: "POST", body: form });
}

function searchSimilar(id, opts) {
  const params = new URLSearchParams({ k: String(opts.k) });
  for (const [field, value] of Object.entries(opts.filters)) params.append("where", `${field}=${value}`);
  for (const key of ["price_min", "price_max", "min_score"]) {
    if (opts[key] !== null) params.set(key, String(opts[key]));
  }
  return call(`/api/similar/${encodeURIComponent(id)}?${params}`);
}

function withoutNulls(obj) {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== null));
}

// -- running a search ---------------------------------------------------------------------

async function run(search, describe) {
  state.last = { search, describe };
  setStatus("Searching…");
  $("results").setAttribute("aria-busy", "true");
  try {
    const result = await search(options());
    render(result.hits);
    const n = result.count;
    setStatus(`${n} product${n === 1 ? "" : "s"} ${describe} · ${result.took_ms} ms`);
  } catch (err) {
    render([]);
    setStatus(err.message, true);
  } finally {
    $("results").removeAttribute("aria-busy");
  }
}

function searchFromInputs() {
  const text = $("query").value.trim();
  if (state.photo) {
    const about = text ? ` and “${text}”` : "";
    return run((opts) => searchPhoto(state.photo, text, opts), `like your photo${about}`);
  }
  if (!text) {
    render([]);
    return setStatus("Type what you are looking for, or drop a photo.");
  }
  return run((opts) => searchText(text, opts), `for “${text}”`);
}

function rerun() {
  if (state.last) run(state.last.search, state.last.describe);
  refreshStrips();
}

function setStatus(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
  status.setAttribute("role", isError ? "alert" : "status");
}

// -- product cards ------------------------------------------------------------------------

function render(hits) {
  const results = $("results");
  results.replaceChildren(...hits.map(card));
}

function card(hit) {
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  node.dataset.productId = hit.product_id || "";
  node.dataset.mediaId = hit.media_id;
  const img = node.querySelector("img");
  if (hit.image_url) img.src = hit.image_url;
  else img.hidden = true;  // a pick whose items table and store hold no picture
  img.alt = hit.title || "Product photo";
  if (hit.kind === "video" && hit.timestamp !== null) {
    const moment = node.querySelector(".moment");
    moment.textContent = `▶ at ${clock(hit.timestamp)}`;
    moment.hidden = false;
  }
  node.querySelector(".title").textContent = hit.title || `${hit.media_key || "photo"} (no catalog entry)`;
  node.querySelector(".price").textContent = price(hit.price, hit.currency);
  node.querySelector(".score").textContent = `score ${hit.score.toFixed(3)}`;
  const catalogSays = hit.catalog_tags || {};
  node.querySelector(".tags").replaceChildren(...Object.entries(hit.tags).map(([group, label]) => {
    const li = document.createElement("li");
    const said = catalogSays[group];
    const differs = said && said.toLowerCase() !== label.toLowerCase();
    li.textContent = differs ? `${label} (catalog: ${said})` : label;
    li.title = `${group.replaceAll("_", " ")}: ${differs ? "the model's, then the catalog's" : "the model's"}`;
    return li;
  }));
  const buy = node.querySelector(".buy");
  if (isWebLink(hit.url)) buy.href = hit.url;
  else buy.remove();
  if (hit.reason) {
    const reason = node.querySelector(".reason");
    reason.textContent = hit.reason;
    reason.hidden = false;
  }
  node.querySelector(".more").addEventListener("click", () => viewProduct(hit));
  return node;
}

// A product in view: more like it below, and what shoppers bought with it above.
function viewProduct(hit) {
  const id = hit.product_id || hit.media_id;
  run((opts) => searchSimilar(id, opts), `like “${hit.title || id}”`);
  if (hit.product_id) showTogether(hit.product_id, hit.title || hit.product_id);
  else {
    state.product = null;
    $("together").hidden = true;
  }
  window.scrollTo({ top: 0, behavior: "smooth" });
}

// -- recommendation strips ----------------------------------------------------------------

const STRIP_K = 8;

// The strips take the page's filters (tags, catalog attributes, price) as the recommend API's `where`;
// "photo or video" is about media, not products, and stays with search.
function stripQuery() {
  const opts = options();
  const params = new URLSearchParams({ k: String(STRIP_K) });
  for (const [field, value] of Object.entries(opts.filters)) {
    if (field !== "kind") params.append("where", `${field}=${value}`);
  }
  if (opts.price_min !== null) params.append("where", `price>=${opts.price_min}`);
  if (opts.price_max !== null) params.append("where", `price<=${opts.price_max}`);
  return params;
}

// Filters changed: the strips on show follow them.
function refreshStrips() {
  if (state.product) showTogether(state.product.id, state.product.title);
  if (state.shopper) showPicks(state.shopper);
}

// Picks carry what a search hit shows, plus why each was picked; no media id, so no video moment.
function pickCard(pick) {
  return card({ ...pick, media_id: "", kind: "image", timestamp: null, tags: pick.tags || {} });
}

function fillStrip(id, about, result, error) {
  const strip = $(id);
  strip.querySelector(".about").textContent = about;
  const picks = result ? result.picks : [];
  strip.querySelector(".row").replaceChildren(...picks.map(pickCard));
  const note = strip.querySelector(".note");
  note.textContent = error ? error.message : (result.note || (picks.length ? "" : "Nothing to show yet."));
  note.hidden = !note.textContent;
  note.classList.toggle("error", Boolean(error));
  strip.hidden = false;
}

async function showTogether(productId, title) {
  state.product = { id: productId, title };
  try {
    const result = await call(`/api/recommend/together/${encodeURIComponent(productId)}?${stripQuery()}`);
    fillStrip("together", `with “${title}”`, result);
  } catch (err) {
    fillStrip("together", `with “${title}”`, null, err);
  }
}

async function showPicks(user) {
  state.shopper = user || null;
  if (!user) {
    $("picked").hidden = true;
    return;
  }
  try {
    const result = await call(`/api/recommend/user/${encodeURIComponent(user)}?${stripQuery()}`);
    fillStrip("picked", `for ${user}`, result);
  } catch (err) {
    fillStrip("picked", `for ${user}`, null, err);
  }
}

// The shopper stays chosen across visits, as a signed-in shop would remember them.
const SHOPPER_KEY = "toolkit.shopper";

function wireShopper() {
  const input = $("shopper");
  $("shopper-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const user = input.value.trim();
    if (user) localStorage.setItem(SHOPPER_KEY, user);
    else localStorage.removeItem(SHOPPER_KEY);
    showPicks(user);
  });
  const saved = localStorage.getItem(SHOPPER_KEY);
  if (saved) {
    input.value = saved;
    showPicks(saved);
  }
}

// Catalog links come from a CSV: only http(s) may become a clickable link, never javascript:.
function isWebLink(url) {
  try {
    return Boolean(url) && ["http:", "https:"].includes(new URL(url).protocol);
  } catch {
    return false;
  }
}

function clock(seconds) {
  const s = Math.floor(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function price(amount, currency) {
  if (amount === null) return "";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "EUR" }).format(amount);
  } catch {
    return `${amount.toFixed(2)} ${currency || ""}`.trim();
  }
}

// -- photo: drop or pick ------------------------------------------------------------------

function setPhoto(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    setStatus(`${file.name} is not an image; drop a JPEG or PNG photo.`, true);
    return;
  }
  state.photo = file;
  const thumb = $("photo-thumb");
  if (thumb.src) URL.revokeObjectURL(thumb.src);
  thumb.src = URL.createObjectURL(file);
  $("photo-preview").hidden = false;
  searchFromInputs();
}

function clearPhoto() {
  state.photo = null;
  $("photo-input").value = "";
  $("photo-preview").hidden = true;
  searchFromInputs();
}

function wireDropZone() {
  const zone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    setPhoto(e.dataTransfer.files[0]);
  });
  $("photo-input").addEventListener("change", (e) => setPhoto(e.target.files[0]));
  $("photo-clear").addEventListener("click", clearPhoto);
  // A photo dropped anywhere else would make the browser navigate away to it.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

// -- filters ------------------------------------------------------------------------------

async function loadFacets() {
  try {
    const facets = await call("/api/facets");
    const tags = Object.entries(facets.tags).map(([group, labels]) => menu(group, group, labels));
    const catalog = Object.entries(facets.attributes).map(([name, values]) => menu(`attr.${name}`, name, values));
    if (Object.keys(facets.kinds).length > 1) catalog.push(menu("kind", "photo or video", facets.kinds));
    $("facet-menus").replaceChildren(...[group("Tags", tags), group("Catalog", catalog)].filter(Boolean));
    if (facets.price_min !== null) $("price-min").placeholder = `min ${Math.floor(facets.price_min)}`;
    if (facets.price_max !== null) $("price-max").placeholder = `max ${Math.ceil(facets.price_max)}`;
  } catch (err) {
    setStatus(`Filters unavailable: ${err.message}`, true);
  }
}

// Tag groups (from the taggers) and catalog columns may share a name, e.g. gender: keep them apart.
function group(title, menus) {
  const present = menus.filter(Boolean);
  if (!present.length) return null;
  const fieldset = document.createElement("fieldset");
  const legend = document.createElement("legend");
  legend.textContent = title;
  fieldset.append(legend, ...present);
  return fieldset;
}

function menu(field, name, counts) {
  const values = Object.keys(counts);
  if (!values.length) return null;
  const label = document.createElement("label");
  label.textContent = name.replaceAll("_", " ").replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
  const select = document.createElement("select");
  select.dataset.field = field;
  select.append(new Option("any", ""));
  for (const value of values.slice(0, 60)) select.append(new Option(`${value} (${counts[value]})`, value));
  select.addEventListener("change", rerun);
  label.append(select);
  return label;
}

function wireFilters() {
  for (const id of ["price-min", "price-max", "min-score", "k"]) $(id).addEventListener("change", rerun);
  $("reset-filters").addEventListener("click", () => {
    for (const select of document.querySelectorAll("#filters select")) select.selectedIndex = select.id === "k" ? 1 : 0;
    for (const id of ["price-min", "price-max", "min-score"]) $(id).value = "";
    rerun();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); searchFromInputs(); });
  wireDropZone();
  wireFilters();
  wireShopper();
  loadFacets();
});
