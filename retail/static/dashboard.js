// The retail dashboard: capacity snapshots and order transitions from /ws, the latest
// orders from GET /orders, mode changes through PUT /admin/capacity and bursts of
// POST /orders. Plain JavaScript, no build step, no outside resources.
"use strict";

const WINDOW_S = 180;       // the charts show the last three minutes
const RATE_WINDOW_S = 5;    // rates are averaged over this many seconds
const LATEST_ORDERS = 20;   // rows in the order table
const WAIT_ORDERS = 200;    // waits are percentiles over this many recent orders
const TIMED_ORDERS = 2000;  // orders whose creation and start times are remembered
const MAX_BURST = 500;
const TERMINAL = new Set(["fulfilled", "failed", "cancelled", "expired"]);
const MODE_HINTS = {
  queue: "over capacity: wait in line",
  reject: "over capacity: refused with 503",
  degrade: "over capacity: cheaper path",
  auto: "over capacity: by the predicted wait",
};
const LEVEL_HINTS = {
  queue: "auto, now queueing: waits within the target",
  degrade: "auto, now degrading: only the cheaper path meets the target",
  refuse: "auto, now refusing: over the target even on the cheaper path",
};

const $ = (id) => document.getElementById(id);

const state = {
  snapshot: null,          // the latest capacity message
  previous: null,          // {t, accepted, rejected} at the previous snapshot
  counts: [],              // {t, dt, accepted, rejected, fulfilled}: counts per snapshot
  samples: [],             // {t, accepted, fulfilled, rejected, inFlight, queued, capacity}
  fulfilledSinceSample: 0,
  fulfilledTotal: 0,
  orders: new Map(),       // id -> row
  timing: new Map(),       // id -> {created, started} (ms), for the waits
  startWaits: [],          // seconds from placed to started, newest last
  fulfilWaits: [],         // seconds from placed to fulfilled, newest last
  detailsWanted: new Set(),
  products: [],
  drawPending: false,
};

// --- the live feed --------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + "/ws");
  socket.onopen = () => setConnection("live", "live");
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.type === "capacity") onSnapshot(data);
    else if (data.type === "event") onEvent(data);
  };
  socket.onclose = (close) => {
    const busy = close.code === 1013;
    setConnection(busy ? "busy" : "offline", busy ? "too many viewers, retrying…" : "offline, reconnecting…");
    state.previous = null;
    state.counts = [];
    setTimeout(connect, busy ? 5000 : 1000);
  };
}

function setConnection(kind, text) {
  const badge = $("connection");
  badge.dataset.state = kind;
  badge.textContent = text;
}

function onSnapshot(snapshot) {
  const t = performance.now() / 1000;
  const counters = snapshot.counters;
  if (state.previous) {
    const counts = {
      t,
      dt: Math.max(0.001, t - state.previous.t),
      accepted: Math.max(0, counters.accepted - state.previous.accepted),
      rejected: Math.max(0, counters.rejected - state.previous.rejected),
      fulfilled: state.fulfilledSinceSample,
    };
    state.counts.push(counts);
    while (state.counts.length && state.counts[0].t < t - RATE_WINDOW_S) state.counts.shift();
    const span = state.counts.reduce((sum, c) => sum + c.dt, 0);
    const rate = (key) => state.counts.reduce((sum, c) => sum + c[key], 0) / span;
    state.samples.push({
      t,
      accepted: rate("accepted"),
      rejected: rate("rejected"),
      fulfilled: rate("fulfilled"),
      inFlight: snapshot.in_flight,
      queued: snapshot.queued,
      capacity: snapshot.capacity,
    });
    while (state.samples.length && state.samples[0].t < t - WINDOW_S) state.samples.shift();
  }
  state.fulfilledSinceSample = 0;
  state.previous = { t, accepted: counters.accepted, rejected: counters.rejected };
  state.snapshot = snapshot;
  renderStats();
  scheduleDraw();
}

function onEvent(event) {
  noteTiming(event.order_id, event.kind, Date.parse(event.at));
  if (event.kind === "fulfilled") {
    state.fulfilledSinceSample += 1;
    state.fulfilledTotal += 1;
    $("fulfilled-total").textContent = state.fulfilledTotal;
  }
  let row = state.orders.get(event.order_id);
  if (!row) {
    if (event.kind !== "created") {
      wantDetails(event.order_id);
      return;
    }
    row = { id: event.order_id, created: Date.parse(event.at), customer: null, service: null };
    state.orders.set(event.order_id, row);
    wantDetails(event.order_id);
  }
  if (row.eventId && row.eventId > event.id) return;  // an older event than the row shows
  row.eventId = event.id;
  row.status = event.status;
  row.step = event.status === "processing" ? event.step : null;
  row.updated = event.at;
  trimOrders();
  scheduleDraw();
}

// --- waits: time to start and time to fulfil -------------------------------------------

function noteTiming(id, kind, at) {
  let timing = state.timing.get(id);
  if (kind === "created") {
    if (!timing) state.timing.set(id, (timing = { created: at, started: null }));
    while (state.timing.size > TIMED_ORDERS) state.timing.delete(state.timing.keys().next().value);
    return;
  }
  if (!timing) return;
  if ((kind === "started" || kind === "resumed") && timing.started === null) {
    timing.started = at;
    pushWait(state.startWaits, (at - timing.created) / 1000);
  } else if (kind === "fulfilled") {
    pushWait(state.fulfilWaits, (at - timing.created) / 1000);
    state.timing.delete(id);
  }
  renderWaits();
}

function pushWait(list, seconds) {
  list.push(Math.max(0, seconds));
  while (list.length > WAIT_ORDERS) list.shift();
}

function quantile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

function formatSeconds(value) {
  if (value === null) return "–";
  if (value < 1) return (value * 1000).toFixed(0) + " ms";
  return value < 10 ? value.toFixed(1) + " s" : value.toFixed(0) + " s";
}

function renderWaits() {
  for (const [id, list, what] of [
    ["start-wait", state.startWaits, "started"],
    ["fulfil-wait", state.fulfilWaits, "fulfilled"],
  ]) {
    if (!list.length) continue;
    $(id).textContent = formatSeconds(quantile(list, 0.5)) + " · " + formatSeconds(quantile(list, 0.95));
    $(id + "-detail").textContent = `p50 · p95, placed → ${what}, last ${list.length} orders`;
  }
}

async function loadWaits() {
  const response = await fetch("/orders?limit=" + WAIT_ORDERS);
  if (!response.ok) return;
  const items = (await response.json()).items.reverse();  // oldest first
  for (const order of items) {
    if (state.timing.has(order.id)) continue;
    const created = Date.parse(order.created_at);
    const started = order.started_at ? Date.parse(order.started_at) : null;
    if (started !== null) pushWait(state.startWaits, (started - created) / 1000);
    if (order.status === "fulfilled" && order.finished_at) {
      pushWait(state.fulfilWaits, (Date.parse(order.finished_at) - created) / 1000);
    } else if (!TERMINAL.has(order.status)) {
      state.timing.set(order.id, { created, started });
    }
  }
  renderWaits();
}

// --- history: the charts start full -----------------------------------------------------

async function loadHistory() {
  let body;
  try {
    const response = await fetch("/capacity/history");
    if (!response.ok) return;
    body = await response.json();
  } catch (error) {
    return;
  }
  const points = body.points || [];
  if (!points.length) return;
  const nowPerf = performance.now() / 1000;
  const nowWall = Date.now() / 1000;
  const at = (point) => nowPerf - (nowWall - Date.parse(point.at) / 1000);
  const window = [];
  for (let i = 1; i < points.length; i++) {
    const before = points[i - 1];
    const point = points[i];
    const t = at(point);
    window.push({
      t,
      dt: Math.max(0.001, t - at(before)),
      accepted: Math.max(0, point.counters.accepted - before.counters.accepted),
      rejected: Math.max(0, point.counters.rejected - before.counters.rejected),
      fulfilled: Math.max(0, point.fulfilled - before.fulfilled),
    });
    while (window.length && window[0].t < t - RATE_WINDOW_S) window.shift();
    const span = window.reduce((sum, c) => sum + c.dt, 0);
    const rate = (key) => window.reduce((sum, c) => sum + c[key], 0) / span;
    if (t < nowPerf - WINDOW_S) continue;
    state.samples.push({
      t,
      accepted: rate("accepted"),
      rejected: rate("rejected"),
      fulfilled: rate("fulfilled"),
      inFlight: point.in_flight,
      queued: point.queued,
      capacity: point.capacity,
    });
  }
  const last = points[points.length - 1];
  state.fulfilledTotal = last.fulfilled;
  $("fulfilled-total").textContent = state.fulfilledTotal;
  $("fulfilled-since").textContent = "since the server started";
  scheduleDraw();
}

// --- orders ---------------------------------------------------------------------------

function fromOrder(order) {
  const known = state.orders.get(order.id) || {};
  const row = {
    ...known,
    id: order.id,
    created: Date.parse(order.created_at),
    customer: order.customer_id,
    service: order.service_level,
  };
  if (!known.status || Date.parse(order.updated_at) >= Date.parse(known.updated || 0)) {
    row.status = order.status;
    row.step = order.current_step;
    row.updated = order.updated_at;
  }
  state.orders.set(order.id, row);
}

// Rows are ordered by their last change, newest first: an order that changes state
// comes to the top instead of sliding below the fold.
function changed(row) {
  return row.updated ? Date.parse(row.updated) : row.created;
}

function latest() {
  return [...state.orders.values()].sort((a, b) => changed(b) - changed(a) || b.created - a.created);
}

function trimOrders() {
  for (const row of latest().slice(LATEST_ORDERS)) state.orders.delete(row.id);
}

let detailsTimer = null;
function wantDetails(id) {
  state.detailsWanted.add(id);
  if (!detailsTimer) detailsTimer = setTimeout(fetchDetails, 300);
}

async function fetchDetails() {
  detailsTimer = null;
  const ids = [...state.detailsWanted];
  state.detailsWanted.clear();
  const newest = latest().slice(0, LATEST_ORDERS);
  const shown = new Set(newest.map((row) => row.id));
  const oldest = newest.length >= LATEST_ORDERS ? changed(newest[newest.length - 1]) : 0;
  for (const id of ids) {
    const row = state.orders.get(id);
    if (row ? row.customer !== null || !shown.has(id) : false) continue;
    const response = await fetch("/orders/" + id);
    if (!response.ok) continue;
    const order = await response.json();
    if (!row && Date.parse(order.updated_at) < oldest) continue;  // not among the latest changes
    fromOrder(order);
  }
  trimOrders();
  scheduleDraw();
}

async function loadOrders() {
  const response = await fetch("/orders?limit=" + LATEST_ORDERS);
  if (!response.ok) return;
  for (const order of (await response.json()).items) fromOrder(order);
  trimOrders();
  scheduleDraw();
}

async function loadProducts() {
  const response = await fetch("/products");
  if (response.ok) state.products = await response.json();
}

// --- controls ------------------------------------------------------------------------

async function switchMode(mode) {
  const message = $("mode-message");
  const token = $("admin-token").value.trim();
  if (!token) {
    showMessage(message, "Enter the admin token (RETAIL_ADMIN_TOKEN) first.", true);
    $("admin-token").focus();
    return;
  }
  sessionStorage.setItem("retail-admin-token", token);
  const response = await fetch("/admin/capacity", {
    method: "PUT",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
    body: JSON.stringify({ mode }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    showMessage(message, `${response.status}: ${body.detail || body.title || "refused"}`, true);
    return;
  }
  showMessage(message, `Mode is now ${body.mode}.`, false);
  state.snapshot = { ...state.snapshot, ...body };
  renderStats();
}

function showMessage(element, text, isError) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

async function placeOne(sku) {
  try {
    const response = await fetch("/orders", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ customer_id: "dashboard", items: [{ sku, quantity: 1 }] }),
    });
    if (response.status === 202 || response.status === 201) fromOrder(await response.json());
    return response.status;
  } catch (error) {
    return "network error";
  }
}

async function burst() {
  const input = $("burst-size");
  const count = Math.min(MAX_BURST, Math.max(1, parseInt(input.value, 10) || 20));
  input.value = count;
  const button = $("burst-button");
  const result = $("burst-result");
  button.disabled = true;
  showMessage(result, `Placing ${count} orders…`, false);
  const skus = state.products.filter((p) => p.stock > count).map((p) => p.sku);
  const pick = (i) => (skus.length ? skus[i % skus.length] : "PEN-3");
  const statuses = await Promise.all(Array.from({ length: count }, (_, i) => placeOne(pick(i))));
  const tally = new Map();
  for (const status of statuses) tally.set(status, (tally.get(status) || 0) + 1);
  const names = { 201: "fulfilled at once", 202: "accepted", 409: "out of stock", 503: "refused (503)" };
  const parts = [...tally.entries()]
    .sort((a, b) => String(a[0]).localeCompare(String(b[0])))
    .map(([status, n]) => `${n} ${names[status] || status}`);
  showMessage(result, `${count} placed: ${parts.join(", ")}.`, !tally.has(202));
  button.disabled = false;
  trimOrders();
  scheduleDraw();
  loadProducts();
}

// --- rendering ------------------------------------------------------------------------

function renderStats() {
  const s = state.snapshot;
  if (!s) return;
  const mode = $("mode");
  mode.dataset.mode = s.mode;
  const auto = s.mode === "auto";
  mode.dataset.level = auto ? s.level : "";
  mode.textContent = auto ? `auto: ${s.level}` : s.mode;
  $("mode-hint").textContent = (auto ? LEVEL_HINTS[s.level] : MODE_HINTS[s.mode]) || "";
  for (const button of document.querySelectorAll(".modes button")) {
    button.classList.toggle("active", button.dataset.mode === s.mode);
  }
  $("capacity").textContent = s.capacity;
  $("in-flight").textContent = s.in_flight;
  $("queued").textContent = s.queued;
  $("queue-limit").textContent = s.queue_limit;
  $("in-flight-bar").style.width = percent(s.in_flight, s.capacity);
  $("queued-bar").style.width = percent(s.queued, s.queue_limit);
  if (s.counters) {
    $("accepted-total").textContent = s.counters.accepted;
    $("rejected-total").textContent = s.counters.rejected;
  }
  if (s.by_priority) {
    for (const [priority, figures] of Object.entries(s.by_priority)) {
      const row = $("priority-" + priority);
      if (!row) continue;
      const c = figures.counters;
      const cells = row.querySelectorAll("td");
      [figures.queued, c.accepted, c.degraded, c.rejected].forEach((value, i) => {
        cells[i].textContent = value;
      });
    }
    $("critical-reserve").textContent = s.critical_reserve;
  }
  const last = state.samples[state.samples.length - 1];
  if (last) {
    $("fulfilled-rate").textContent = formatRate(last.fulfilled);
    $("rejected-rate").textContent = formatRate(last.rejected);
  }
}

function percent(value, whole) {
  return whole > 0 ? Math.min(100, (100 * value) / whole).toFixed(1) + "%" : "0%";
}

function formatRate(value) {
  return value >= 10 ? value.toFixed(0) : value.toFixed(1);
}

function scheduleDraw() {
  if (state.drawPending) return;
  state.drawPending = true;
  requestAnimationFrame(() => {
    state.drawPending = false;
    drawChart($("rate-chart"), [
      { key: "accepted", color: "--accepted" },
      { key: "fulfilled", color: "--fulfilled" },
      { key: "rejected", color: "--rejected" },
    ], 1);
    // capacity last, dashed: on top of in flight, which often runs at capacity
    drawChart($("load-chart"), [
      { key: "queued", color: "--queued" },
      { key: "inFlight", color: "--in-flight" },
      { key: "capacity", color: "--capacity", dashed: true },
    ], 1);
    renderOrders();
  });
}

function niceStep(value) {
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function drawChart(canvas, series, floor) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const styles = getComputedStyle(document.documentElement);
  const pad = { left: 36, right: 8, top: 8, bottom: 20 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const now = performance.now() / 1000;
  const samples = state.samples;
  let top = floor;
  for (const sample of samples) for (const s of series) top = Math.max(top, sample[s.key]);
  const step = top <= 4 ? 1 : niceStep((top * 1.05) / 4);
  top = step * 4;
  // The time axis grows with the data, from one minute up to WINDOW_S.
  const first = samples.length ? samples[0].t : now;
  const span = Math.min(WINDOW_S, Math.max(60, now - first));
  const x = (t) => pad.left + plotW * (1 - (now - t) / span);
  const y = (v) => pad.top + plotH * (1 - v / top);

  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#98a2b3";
  g.strokeStyle = "#eef0f4";
  g.lineWidth = 1;
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const value = (top * i) / 4;
    const py = Math.round(y(value)) + 0.5;
    g.beginPath();
    g.moveTo(pad.left, py);
    g.lineTo(width - pad.right, py);
    g.stroke();
    g.fillText(Number.isInteger(value) ? String(value) : value.toFixed(1), pad.left - 6, py);
  }
  g.textAlign = "center";
  g.textBaseline = "alphabetic";
  const tick = span <= 90 ? 30 : 60;
  for (let ago = 0; ago <= span + 0.5; ago += tick) {
    const label = ago === 0 ? "now" : ago % 60 === 0 ? `−${ago / 60} min` : `−${ago} s`;
    const px = x(now - ago);
    g.fillText(label, Math.min(Math.max(px, pad.left + 16), width - pad.right - 12), height - 4);
  }
  g.save();
  g.beginPath();
  g.rect(pad.left, pad.top - 2, plotW, plotH + 4);
  g.clip();
  for (const s of series) {
    g.strokeStyle = styles.getPropertyValue(s.color).trim();
    g.lineWidth = s.dashed ? 1.5 : 2;
    g.setLineDash(s.dashed ? [5, 4] : []);
    g.lineJoin = "round";
    g.beginPath();
    samples.forEach((sample, i) => {
      const px = x(sample.t);
      const py = y(sample[s.key]);
      if (i === 0) g.moveTo(px, py);
      else g.lineTo(px, py);
    });
    g.stroke();
  }
  g.restore();
}

function renderOrders() {
  const rows = latest().slice(0, LATEST_ORDERS);
  const body = document.querySelector("#orders tbody");
  body.replaceChildren(...rows.map(orderRow));
  $("orders-empty").hidden = rows.length > 0;
}

function orderRow(row) {
  const tr = document.createElement("tr");
  tr.dataset.id = row.id;
  tr.dataset.status = row.status || "";
  const cell = (text, className) => {
    const td = document.createElement("td");
    if (className) td.className = className;
    if (text instanceof Node) td.append(text);
    else td.textContent = text;
    tr.append(td);
  };
  const link = document.createElement("a");
  link.href = "/orders/" + row.id + "/events";
  // UUIDv7: the first characters are a timestamp, alike for orders placed together;
  // the last ones are random, so they tell orders apart.
  link.textContent = "…" + row.id.slice(-8);
  link.title = row.id;
  cell(link, "id");
  cell(row.customer || "…");
  const status = document.createElement("span");
  status.className = "status";
  status.dataset.status = row.status || "";
  status.textContent = row.status || "…";
  cell(status);
  cell(row.step || (TERMINAL.has(row.status) ? "" : "–"));
  cell(row.service || "…", row.service === "degraded" ? "degraded" : "");
  cell(row.updated ? new Date(row.updated).toLocaleTimeString() : "");
  return tr;
}

// --- start ------------------------------------------------------------------------------

async function start() {
  for (const button of document.querySelectorAll(".modes button")) {
    button.addEventListener("click", () => switchMode(button.dataset.mode));
  }
  $("admin-token").value = sessionStorage.getItem("retail-admin-token") || "";
  $("burst-button").addEventListener("click", burst);
  window.addEventListener("resize", scheduleDraw);
  setInterval(scheduleDraw, 1000);  // keep the time axis moving while nothing happens
  loadProducts();
  loadOrders();
  loadWaits();
  await loadHistory();  // the charts start with the last minutes, then go on live
  connect();
}

start();
