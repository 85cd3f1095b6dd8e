// The live operations view: poll /ops/data every second, draw the last two minutes.
"use strict";

const POLL_MS = 1000;
const FETCH_TIMEOUT_MS = 2500;
const WINDOW_POINTS = 120;
const WINDOW_MS = WINDOW_POINTS * POLL_MS;
const GAP_MS = 2500; // samples further apart than this are not joined: the page saw nothing
const STALE_STATUS_S = 3; // the supervisor rewrites its status every 0.1 s
const WORKER_COLORS = ["#0f766e", "#7c3aed", "#0369a1", "#b45309", "#be185d", "#4d7c0f",
  "#1d4ed8", "#a16207", "#047857", "#9333ea"];

function byId(id) { return document.getElementById(id); }

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function number(value, digits) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

function pad2(n) { return String(n).padStart(2, "0"); }

function parseTime(iso) {
  // Microseconds are more than Date.parse promises to read: keep milliseconds.
  return new Date(iso.replace(/(\.\d{3})\d+/, "$1"));
}

function clock(date) {
  return pad2(date.getHours()) + ":" + pad2(date.getMinutes()) + ":" + pad2(date.getSeconds());
}

function dateTime(date) {
  return date.getFullYear() + "-" + pad2(date.getMonth() + 1) + "-" + pad2(date.getDate()) +
    " " + pad2(date.getHours()) + ":" + pad2(date.getMinutes());
}

function duration(ms) {
  const minutes = Math.round(Math.abs(ms) / 60000);
  if (minutes < 1) return "less than a minute";
  if (minutes < 60) return minutes + " min";
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return hours + " h " + (minutes % 60) + " min";
  return Math.floor(hours / 24) + " days";
}

function uptime(seconds) {
  if (seconds < 60) return seconds.toFixed(0) + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + pad2(Math.floor(seconds % 60)) + " s";
  return duration(seconds * 1000);
}

function niceStep(raw) {
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const n = raw / power;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * power;
}

// A time-series chart on a canvas: the last two minutes, y axis from 0, a legend on top.
class TimeChart {
  constructor(canvas, options) {
    this.canvas = canvas;
    this.max = options.max;          // a fixed top of the y axis, or undefined to fit the data
    this.floor = options.floor || 1; // the least top when fitting
    this.integer = Boolean(options.integer);
    this.step = Boolean(options.step);
    this.digits = options.digits === undefined ? 1 : options.digits;
    this.unit = options.unit || "";
    this.series = new Map(options.series.map((s) => [s.key, s]));
    this.samples = [];
    this.colorOf = new Map();
  }

  push(t, values) {
    this.samples.push({ t, values });
    if (this.samples.length > WINDOW_POINTS) this.samples.shift();
    this.canvas.dataset.samples = String(this.samples.length);
  }

  describe(key) {
    const known = this.series.get(key);
    if (known) return known;
    if (!this.colorOf.has(key)) {
      this.colorOf.set(key, WORKER_COLORS[this.colorOf.size % WORKER_COLORS.length]);
    }
    return { key, label: key, color: this.colorOf.get(key), dash: [] };
  }

  keys() {
    const keys = [...this.series.keys()].filter((k) => this.samples.some((s) => s.values[k] != null));
    for (const sample of this.samples) {
      for (const key of Object.keys(sample.values)) {
        if (!this.series.has(key) && !keys.includes(key) && sample.values[key] != null) keys.push(key);
      }
    }
    return keys;
  }

  latest(key) {
    for (let i = this.samples.length - 1; i >= 0; i--) {
      const value = this.samples[i].values[key];
      if (value != null) return value;
    }
    return null;
  }

  fit(ctx, width, height) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(width * dpr);
    const h = Math.round(height * dpr);
    if (this.canvas.width !== w) this.canvas.width = w;
    if (this.canvas.height !== h) this.canvas.height = h;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
  }

  drawLegend(ctx, keys, width) {
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    const last = this.samples.length ? this.samples[this.samples.length - 1].values : {};
    let x = 48;
    let y = 12;
    for (const key of keys) {
      const s = this.describe(key);
      const text = s.label + " " + (key in last
        ? number(this.latest(key), this.digits) + this.unit
        : "(gone)");
      const itemWidth = 22 + ctx.measureText(text).width + 14;
      if (x + itemWidth > width && x > 48) { x = 48; y += 16; }
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2.5;
      ctx.setLineDash(s.dash || []);
      ctx.beginPath();
      ctx.moveTo(x, y);
      ctx.lineTo(x + 16, y);
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = "#1d232a";
      ctx.fillText(text, x + 22, y);
      x += itemWidth;
    }
    return y + 12;
  }

  scale(keys) {
    if (this.max !== undefined) return { top: this.max, tick: this.max / 4 };
    let highest = this.floor;
    for (const sample of this.samples) {
      for (const key of keys) {
        const v = sample.values[key];
        if (v != null && v > highest) highest = v;
      }
    }
    let tick = niceStep(highest / 4);
    if (this.integer) tick = Math.max(1, Math.round(tick));
    return { top: Math.ceil(highest / tick) * tick, tick };
  }

  draw() {
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    if (!width || !height) return;
    const ctx = this.canvas.getContext("2d");
    this.fit(ctx, width, height);
    ctx.font = "12px system-ui, -apple-system, 'Segoe UI', sans-serif";
    const keys = this.keys();
    const top = this.drawLegend(ctx, keys, width - 8) + 6;
    const left = 48;
    const right = width - 12;
    const bottom = height - 22;
    const { top: yMax, tick } = this.scale(keys);
    const y = (v) => bottom - (v / yMax) * (bottom - top);
    const now = this.samples.length ? this.samples[this.samples.length - 1].t : Date.now();
    const x = (t) => right - ((now - t) / WINDOW_MS) * (right - left);

    ctx.lineWidth = 1;
    ctx.strokeStyle = "#e5e9ed";
    ctx.fillStyle = "#5b6670";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let v = 0; v <= yMax + tick / 1000; v += tick) {
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y(v)) + 0.5);
      ctx.lineTo(right, Math.round(y(v)) + 0.5);
      ctx.stroke();
      ctx.fillText(String(Number(v.toFixed(2))) + this.unit, left - 6, y(v));
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const back of [120, 90, 60, 30, 0]) {
      const at = right - (back * 1000 / WINDOW_MS) * (right - left);
      ctx.beginPath();
      ctx.moveTo(Math.round(at) + 0.5, top);
      ctx.lineTo(Math.round(at) + 0.5, bottom);
      ctx.stroke();
      ctx.fillText(back === 0 ? "now" : "−" + back + " s", Math.min(Math.max(at, left + 14), right - 12), bottom + 6);
    }
    ctx.strokeStyle = "#9aa5b1";
    ctx.beginPath();
    ctx.moveTo(left + 0.5, top);
    ctx.lineTo(left + 0.5, bottom + 0.5);
    ctx.lineTo(right, bottom + 0.5);
    ctx.stroke();

    if (!keys.length) {
      ctx.textBaseline = "middle";
      ctx.fillStyle = "#5b6670";
      ctx.fillText("no data", (left + right) / 2, (top + bottom) / 2);
      return;
    }
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top - 2, right - left + 2, bottom - top + 4);
    ctx.clip();
    for (const key of keys) this.drawLine(ctx, key, x, y);
    ctx.restore();
  }

  drawLine(ctx, key, x, y) {
    const s = this.describe(key);
    ctx.strokeStyle = s.color;
    ctx.fillStyle = s.color;
    ctx.lineWidth = 2;
    ctx.setLineDash(s.dash || []);
    ctx.beginPath();
    let previous = null;
    for (const sample of this.samples) {
      const value = sample.values[key];
      // An unknown value (a new process's first CPU sample) is bridged; a time without
      // answers (GAP_MS) is not.
      if (value == null) continue;
      const px = x(sample.t);
      const py = y(value);
      if (previous === null || sample.t - previous.t > GAP_MS) {
        ctx.moveTo(px, py);
      } else {
        if (this.step) ctx.lineTo(px, y(previous.value));
        ctx.lineTo(px, py);
      }
      previous = { t: sample.t, value };
    }
    ctx.stroke();
    ctx.setLineDash([]);
    if (previous !== null) {
      ctx.beginPath();
      ctx.arc(x(previous.t), y(previous.value), 2.5, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
}

const view = {
  updates: 0,
  failures: 0,
  failingSince: null,
  eventsShown: null,
  peaksShown: null,
  charts: {},
};

function setCounter(node, value) {
  const previous = node.dataset.value === "" ? null : Number(node.dataset.value);
  node.dataset.value = value === null ? "" : String(value);
  node.textContent = value === null ? "–" : String(value);
  if (value !== null && previous !== null && value > previous) {
    node.classList.remove("bumped");
    void node.offsetWidth; // restart the highlight animation
    node.classList.add("bumped");
  }
}

function kindClass(kind) {
  if (kind.includes("restart")) return "kind-restart";
  if (kind.startsWith("scaled")) return "kind-scale";
  if (kind.startsWith("cpu_peak")) return "kind-cpu";
  if (kind.startsWith("backup")) return "kind-backup";
  return "kind-other";
}

function showEvents(list, empty, events, shownKey) {
  const signature = events.map((e) => e.time + e.kind).join("|");
  if (signature === view[shownKey]) return;
  view[shownKey] = signature;
  list.replaceChildren();
  for (const event of events) {
    const item = element("li", "event");
    const when = element("time", "", clock(parseTime(event.time)));
    when.dateTime = event.time;
    item.append(when, element("span", "kind " + kindClass(event.kind), event.kind),
      element("span", "message", event.message));
    list.append(item);
  }
  empty.hidden = events.length > 0;
}

function showWorkers(processes, supervised) {
  const rows = byId("worker-rows");
  rows.replaceChildren();
  for (const p of processes) {
    const row = element("tr");
    row.append(
      element("td", "", String(p.pid) + (supervised ? "" : " (this process)")),
      element("td", "num", p.uptime_s === null ? "–" : uptime(p.uptime_s)),
      element("td", "num", number(p.cpu_percent, 1)),
    );
    rows.append(row);
  }
}

function showBackups(backups, now) {
  const last = byId("last-backup");
  const next = byId("next-backup");
  if (backups.last) {
    const at = parseTime(backups.last);
    last.replaceChildren(dateTime(at), element("small", "", duration(now - at) + " ago"));
  } else {
    last.replaceChildren("none yet");
  }
  if (backups.next) {
    const at = parseTime(backups.next);
    next.replaceChildren(dateTime(at), element("small", "", "in " + duration(at - now) +
      " · daily at " + backups.at + " server time"));
  } else {
    next.replaceChildren("not scheduled here", element("small", "", "the supervisor schedules backups"));
  }
}

function showStack(data) {
  const line = byId("stack-line");
  const s = data.supervisor;
  line.classList.toggle("warn", s.running && s.age_s !== null && s.age_s > STALE_STATUS_S);
  if (s.running) {
    let text = "Stack up · supervisor pid " + s.pid;
    if (s.age_s !== null) text += " · status " + s.age_s.toFixed(1) + " s old";
    if (s.age_s !== null && s.age_s > STALE_STATUS_S) text += " (the supervisor is not updating it)";
    if (s.stopping) text += " · stopping";
    line.textContent = text;
  } else {
    line.textContent = "No supervisor: one process, " + data.served_by;
  }
  byId("no-supervisor").hidden = s.running;
}

function update(data) {
  const t = Date.now();
  const supervised = data.supervisor.running;
  view.charts.rate.push(t, { rate: data.rate_rps });
  view.charts.workers.push(t, { desired: data.workers.desired, running: data.workers.running });
  const cpu = { host: data.host_cpu_percent };
  for (const p of data.workers.processes) cpu["pid " + p.pid] = p.cpu_percent;
  view.charts.cpu.push(t, cpu);
  for (const chart of Object.values(view.charts)) chart.draw();

  showStack(data);
  byId("rate").textContent = data.rate_rps === null ? "–" : number(data.rate_rps, 1) + " req/s";
  const workers = byId("workers");
  workers.textContent = supervised
    ? (data.workers.running ?? "–") + " / " + (data.workers.desired ?? "–")
    : "1 process";
  workers.classList.toggle("warn", supervised && data.workers.running !== null &&
    data.workers.desired !== null && data.workers.running < data.workers.desired);
  byId("host-cpu").textContent = data.host_cpu_percent === null ? "–" : number(data.host_cpu_percent, 1) + " %";
  setCounter(byId("restarts"), data.restarts);
  setCounter(byId("scale-events"), data.scale_events);
  setCounter(byId("cpu-peaks"), data.cpu_peaks.count);
  byId("cpu-peaks").classList.toggle("warn", data.cpu_peaks.active);
  showBackups(data.backups, t);
  showEvents(byId("events"), byId("events-empty"), data.events, "eventsShown");
  showEvents(byId("peaks"), byId("peaks-empty"), data.cpu_peaks.recent, "peaksShown");
  showWorkers(data.workers.processes, supervised);
  byId("served-by").textContent = data.served_by;
  byId("updated").textContent = clock(new Date(t));

  view.updates += 1;
  byId("ops").dataset.updates = String(view.updates);
}

function showFailure(reason) {
  view.failures += 1;
  if (view.failingSince === null) view.failingSince = new Date();
  const banner = byId("banner");
  banner.textContent = "Cannot reach /ops/data since " + clock(view.failingSince) + " (" +
    view.failures + (view.failures === 1 ? " failed poll" : " failed polls") + ": " + reason +
    "). The stack may be restarting; retrying every second.";
  banner.hidden = false;
}

function recovered() {
  view.failures = 0;
  view.failingSince = null;
  byId("banner").hidden = true;
}

// The figures, or null after saying on the page why there are none.
async function fetchData() {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
  try {
    const response = await fetch("/ops/data", {
      cache: "no-store", headers: { "Accept": "application/json" }, signal: abort.signal,
    });
    if (!response.ok) {
      showFailure("answered " + response.status);
      return null;
    }
    return await response.json();
  } catch (error) {
    showFailure(error.name === "AbortError" ? "no answer in " + FETCH_TIMEOUT_MS / 1000 + " s" : "no connection");
    return null;
  } finally {
    clearTimeout(timer);
  }
}

async function poll() {
  const started = performance.now();
  try {
    const data = await fetchData();
    if (data !== null) {
      update(data);
      recovered();
    }
  } finally {
    setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  view.charts.rate = new TimeChart(byId("chart-rate"), {
    floor: 2, digits: 1,
    series: [{ key: "rate", label: "req/s", color: "#c2410c", dash: [] }],
  });
  view.charts.workers = new TimeChart(byId("chart-workers"), {
    floor: 2, integer: true, step: true, digits: 0,
    // Running first: the dashed desired line stays visible on top where they are equal.
    series: [
      { key: "running", label: "running", color: "#0f766e", dash: [] },
      { key: "desired", label: "desired", color: "#c2410c", dash: [6, 4] },
    ],
  });
  view.charts.cpu = new TimeChart(byId("chart-cpu"), {
    max: 100, digits: 1, unit: "%",
    series: [{ key: "host", label: "host", color: "#1d232a", dash: [] }],
  });
  window.addEventListener("resize", () => {
    for (const chart of Object.values(view.charts)) chart.draw();
  });
  poll();
});
