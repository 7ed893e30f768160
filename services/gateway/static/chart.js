// canal dashboard: a small hand-made SVG time-series chart.
//
// Columns (few points) or a line with an area (many points), time on x in the
// chosen IANA zone, nice ticks on y, a tooltip that follows the pointer or the
// keyboard (arrow keys, Home/End), and a data table as the text alternative.

const SVG_NS = "http://www.w3.org/2000/svg";
const BAR_LIMIT = 90;

const el = (tag, attrs = {}, ns = SVG_NS) => {
  const node = document.createElementNS(ns, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) node.setAttribute(k, String(v));
  return node;
};
const h = (tag, attrs = {}, text) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) node.setAttribute(k, String(v));
  if (text != null) node.textContent = text;
  return node;
};

// ---------------------------------------------------------------- time in a zone

const partsCache = new Map();
function partsFormatter(tz) {
  let f = partsCache.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", { timeZone: tz, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric", weekday: "short" });
    partsCache.set(tz, f);
  }
  return f;
}

/** Wall-clock parts of a unix time in a zone: {y, mo, d, h, mi, s, wd (0=Mon)}. */
export function zonedParts(unix, tz) {
  const p = {};
  for (const { type, value } of partsFormatter(tz).formatToParts(new Date(unix * 1000))) p[type] = value;
  const wd = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].indexOf(p.weekday);
  return { y: +p.year, mo: +p.month, d: +p.day, h: +p.hour % 24, mi: +p.minute, s: +p.second, wd };
}

const fmtCache = new Map();
/** Formats a unix time in a zone with Intl options (cached formatters). */
export function formatInZone(unix, tz, opts) {
  const key = tz + JSON.stringify(opts);
  let f = fmtCache.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat(undefined, { timeZone: tz, ...opts });
    fmtCache.set(key, f);
  }
  return f.format(new Date(unix * 1000));
}

const dayNumber = (p) => Math.floor(Date.UTC(p.y, p.mo - 1, p.d) / 86_400_000);

// Tick levels, fine to coarse: a key that changes exactly at each boundary.
const LEVELS = [
  { secs: 60, unit: "min", key: (p) => `${dayNumber(p)}:${p.h}:${p.mi}` },
  { secs: 300, unit: "min", key: (p) => `${dayNumber(p)}:${p.h}:${Math.floor(p.mi / 5)}` },
  { secs: 900, unit: "min", key: (p) => `${dayNumber(p)}:${p.h}:${Math.floor(p.mi / 15)}` },
  { secs: 1800, unit: "min", key: (p) => `${dayNumber(p)}:${p.h}:${Math.floor(p.mi / 30)}` },
  { secs: 3600, unit: "hour", key: (p) => `${dayNumber(p)}:${p.h}` },
  { secs: 10800, unit: "hour", key: (p) => `${dayNumber(p)}:${Math.floor(p.h / 3)}` },
  { secs: 21600, unit: "hour", key: (p) => `${dayNumber(p)}:${Math.floor(p.h / 6)}` },
  { secs: 43200, unit: "hour", key: (p) => `${dayNumber(p)}:${Math.floor(p.h / 12)}` },
  { secs: 86400, unit: "day", key: (p) => `${dayNumber(p)}` },
  { secs: 604800, unit: "day", key: (p) => `${Math.floor((dayNumber(p) + 3) / 7)}` },
  { secs: 2_629_800, unit: "month", key: (p) => `${p.y}-${p.mo}` },
  { secs: 7_889_400, unit: "month", key: (p) => `${p.y}-${Math.floor((p.mo - 1) / 3)}` },
  { secs: 15_778_800, unit: "month", key: (p) => `${p.y}-${Math.floor((p.mo - 1) / 6)}` },
  { secs: 31_557_600, unit: "year", key: (p) => `${p.y}` },
  { secs: 63_115_200, unit: "year", key: (p) => `${Math.floor(p.y / 2)}` },
  { secs: 157_788_000, unit: "year", key: (p) => `${Math.floor(p.y / 5)}` },
  { secs: 315_576_000, unit: "year", key: (p) => `${Math.floor(p.y / 10)}` },
];

const FULL_BUCKET = { minute: 60, hour: 3600, day: 0.95 * 86400, week: 0.95 * 604800, month: 27.9 * 86400 };

export const GRANULARITY_SECONDS = { minute: 60, hour: 3600, day: 86400, week: 604800, month: 2_629_800 };

/** Tick positions (bucket starts where a boundary of the chosen level falls) and their labels. */
function timeTicks(points, tz, granularity, maxTicks) {
  if (!points.length) return [];
  const minSecs = GRANULARITY_SECONDS[granularity] ?? 60;
  const parts = points.map((pt) => zonedParts(pt.start, tz));
  const firstPrev = zonedParts(points[0].start - 1, tz);
  let chosen = null;
  let idx = [];
  let finer = null;
  for (const level of LEVELS) {
    if (level.secs < minSecs * 0.99) continue;
    const keys = parts.map(level.key);
    const found = [];
    keys.forEach((k, i) => {
      const prev = i === 0 ? level.key(firstPrev) : keys[i - 1];
      if (k !== prev) found.push(i);
    });
    if (found.length <= maxTicks) {
      if (found.length < 2 && finer) {
        // Too coarse to read: thin the finer level instead (every 2nd day, ...).
        const step = Math.ceil(finer.found.length / maxTicks);
        chosen = finer.level;
        idx = finer.found.filter((_, j) => j % step === 0);
      } else {
        chosen = level;
        idx = found;
      }
      break;
    }
    finer = { level, found };
  }
  if (!chosen) {
    chosen = LEVELS[LEVELS.length - 1];
    const step = Math.ceil(points.length / maxTicks);
    idx = points.map((_, i) => i).filter((i) => i % step === 0);
  }
  let prevParts = null;
  return idx.map((i) => {
    const p = parts[i];
    const t = points[i].start;
    let line1, line2 = "";
    if (chosen.unit === "min" || chosen.unit === "hour") {
      line1 = formatInZone(t, tz, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
      if (!prevParts || dayNumber(prevParts) !== dayNumber(p)) line2 = formatInZone(t, tz, { month: "short", day: "numeric" });
    } else if (chosen.unit === "day") {
      line1 = formatInZone(t, tz, { month: "short", day: "numeric" });
      if (!prevParts || prevParts.y !== p.y) line2 = String(p.y);
    } else if (chosen.unit === "month") {
      line1 = formatInZone(t, tz, { month: "short" });
      if (!prevParts || prevParts.y !== p.y) line2 = String(p.y);
    } else {
      line1 = String(p.y);
    }
    prevParts = p;
    return { t, line1, line2 };
  });
}

/** About `count` round tick values covering [lo, hi]. */
function niceTicks(lo, hi, count = 4) {
  if (hi === lo) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const integral = Number.isInteger(lo) && Number.isInteger(hi);
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).filter((s) => !integral || Number.isInteger(s)).find((s) => s >= raw) ?? 10 * mag;
  const s = integral ? Math.max(1, step) : step;
  const start = Math.floor(lo / s) * s;
  const end = Math.ceil(hi / s) * s;
  const ticks = [];
  for (let v = start; v <= end + s / 2; v += s) ticks.push(Math.round(v * 1e6) / 1e6);
  return ticks;
}

/** A human label of one bucket, by granularity. */
export function bucketLabel(pt, tz, granularity) {
  switch (granularity) {
    case "minute":
    case "hour": {
      const day = formatInZone(pt.start, tz, { weekday: "short", month: "short", day: "numeric", year: "numeric" });
      const t0 = formatInZone(pt.start, tz, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
      const t1 = formatInZone(pt.end, tz, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
      return `${day}, ${t0}–${t1}`;
    }
    case "day":
      return formatInZone(pt.start, tz, { weekday: "short", month: "short", day: "numeric", year: "numeric" });
    case "week":
      return `Week of ${formatInZone(pt.start, tz, { month: "short", day: "numeric", year: "numeric" })}`;
    case "month":
      return formatInZone(pt.start, tz, { month: "long", year: "numeric" });
    default:
      return formatInZone(pt.start, tz, { dateStyle: "medium", timeStyle: "short" });
  }
}

// ---------------------------------------------------------------- the chart

let chartSeq = 0;

export class TimeChart {
  /**
   * @param {HTMLElement} root an empty element that the chart fills
   * @param {{label?: string}} options
   */
  constructor(root, options = {}) {
    this.root = root;
    this.id = `chart${++chartSeq}`;
    this.options = options;
    this.points = [];
    this.focus = -1;
    this.root.replaceChildren();
    this.root.classList.add("tchart");

    this.figure = h("div", { class: "tchart-plot", tabindex: "0", role: "group", "aria-roledescription": "chart", "aria-describedby": `${this.id}-help` });
    this.svg = el("svg", { role: "img", "aria-labelledby": `${this.id}-desc`, focusable: "false" });
    this.desc = el("desc", { id: `${this.id}-desc` });
    this.tooltip = h("div", { class: "tchart-tip", hidden: "" });
    this.help = h("p", { id: `${this.id}-help`, class: "sr-only" }, "Use the left and right arrow keys to move between points, Home and End to jump.");
    this.live = h("p", { class: "sr-only", "aria-live": "polite" });
    this.empty = h("p", { class: "tchart-empty", hidden: "" }, "No data in this window.");
    this.figure.append(this.svg, this.tooltip, this.empty);

    this.details = h("details", { class: "tchart-table" });
    this.details.append(h("summary", {}, "Show data as a table"));
    this.tableWrap = h("div", { class: "table-scroll" });
    this.details.append(this.tableWrap);

    this.root.append(this.figure, this.help, this.live, this.details);

    this.figure.addEventListener("pointermove", (e) => this.onPointer(e));
    this.figure.addEventListener("pointerleave", () => { if (document.activeElement !== this.figure) this.setFocus(-1); });
    this.figure.addEventListener("keydown", (e) => this.onKey(e));
    this.figure.addEventListener("blur", () => this.setFocus(-1));
    this.resizeObserver = new ResizeObserver(() => this.render());
    this.resizeObserver.observe(this.root);
  }

  /**
   * @param {{points: {start:number,end:number,value:number}[], tz: string, granularity: string,
   *          metricLabel: string, format: (v:number)=>string, window?: {start:number,end:number}}} d
   */
  setData(d) {
    this.data = d;
    const full = FULL_BUCKET[d.granularity] ?? 0;
    // A bucket clipped by the window edge holds less time: drawn lighter, said in the tooltip.
    this.points = (d.points || []).map((p) => ({ ...p, partial: p.end - p.start < full }));
    this.focus = -1;
    this.render();
    this.renderTable();
  }

  render() {
    const d = this.data;
    if (!d) return;
    const width = Math.max(280, Math.floor(this.figure.clientWidth || this.root.clientWidth || 600));
    const height = width < 520 ? 220 : 280;
    const svg = this.svg;
    svg.replaceChildren(this.desc);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    const pts = this.points;
    this.empty.hidden = pts.length > 0;
    this.desc.textContent = this.describe();
    if (!pts.length) return;

    const values = pts.map((p) => p.value);
    const lo = Math.min(0, ...values);
    const hi = Math.max(0, ...values);
    const yt = niceTicks(lo, hi, height < 250 ? 3 : 4);
    const yMin = yt[0], yMax = yt[yt.length - 1];
    const yLabels = yt.map((v) => d.formatAxis ? d.formatAxis(v) : String(v));
    const left = 12 + Math.max(...yLabels.map((s) => s.length)) * 7;
    const m = { top: 14, right: 14, bottom: 40, left };
    const iw = width - m.left - m.right;
    const ih = height - m.top - m.bottom;
    const t0 = pts[0].start;
    const t1 = Math.max(pts[pts.length - 1].end, t0 + 1);
    const x = (t) => m.left + ((t - t0) / (t1 - t0)) * iw;
    const y = (v) => m.top + ih - ((v - yMin) / (yMax - yMin || 1)) * ih;
    this.geom = { m, iw, ih, x, y, width, height };

    // y grid and labels
    const grid = el("g", { class: "tchart-grid", "aria-hidden": "true" });
    yt.forEach((v, i) => {
      grid.append(el("line", { x1: m.left, x2: width - m.right, y1: y(v), y2: y(v), class: v === 0 ? "zero" : "" }));
      const label = el("text", { x: m.left - 8, y: y(v), dy: "0.32em", "text-anchor": "end", class: "tchart-ylabel" });
      label.textContent = yLabels[i];
      grid.append(label);
    });
    svg.append(grid);

    // x ticks
    const maxTicks = Math.max(2, Math.floor(iw / 78));
    const xaxis = el("g", { class: "tchart-xaxis", "aria-hidden": "true" });
    xaxis.append(el("line", { x1: m.left, x2: width - m.right, y1: m.top + ih, y2: m.top + ih, class: "axis" }));
    let lastRight = -Infinity;
    for (const tk of timeTicks(pts, d.tz, d.granularity, maxTicks)) {
      const tx = x(tk.t);
      const w = Math.max(tk.line1.length, tk.line2.length) * 6.6;
      if (tx - w / 2 < lastRight + 6 || tx + w / 2 > width) continue;
      lastRight = tx + w / 2;
      xaxis.append(el("line", { x1: tx, x2: tx, y1: m.top + ih, y2: m.top + ih + 5, class: "tick" }));
      const text = el("text", { x: tx, y: m.top + ih + 18, "text-anchor": "middle", class: "tchart-xlabel" });
      text.textContent = tk.line1;
      xaxis.append(text);
      if (tk.line2) {
        const t2 = el("text", { x: tx, y: m.top + ih + 32, "text-anchor": "middle", class: "tchart-xlabel sub" });
        t2.textContent = tk.line2;
        xaxis.append(t2);
      }
    }
    svg.append(xaxis);

    // series
    const series = el("g", { class: "tchart-series", "aria-hidden": "true" });
    const bars = pts.length <= BAR_LIMIT;
    this.bars = bars;
    const mid = (p) => (x(p.start) + x(p.end)) / 2;
    if (bars) {
      pts.forEach((p, i) => {
        const bw = Math.max(1, x(p.end) - x(p.start));
        const gap = Math.min(bw * 0.22, 6);
        const top = y(Math.max(0, p.value)), bottom = y(Math.min(0, p.value));
        series.append(el("rect", { x: x(p.start) + gap / 2, y: top, width: Math.max(1, bw - gap), height: Math.max(p.value === 0 ? 0 : 1, bottom - top), rx: Math.min(3, bw / 4), class: p.partial ? "bar partial" : "bar", "data-i": i }));
      });
    } else {
      const xy = (p) => `${mid(p).toFixed(1)},${y(p.value).toFixed(1)}`;
      const line = pts.map((p, i) => `${i ? "L" : "M"}${xy(p)}`).join("");
      const base = y(Math.max(yMin, Math.min(0, yMax)));
      const area = `${line}L${mid(pts[pts.length - 1]).toFixed(1)},${base}L${mid(pts[0]).toFixed(1)},${base}Z`;
      let solid = "", dashed = "";
      for (let i = 1; i < pts.length; i++) {
        const seg = `M${xy(pts[i - 1])}L${xy(pts[i])}`;
        if (pts[i - 1].partial || pts[i].partial) dashed += seg;
        else solid += seg;
      }
      series.append(el("path", { d: area, class: "area" }), el("path", { d: solid || line, class: "line" }));
      if (dashed) series.append(el("path", { d: dashed, class: "line partial" }));
    }
    svg.append(series);

    this.guide = el("g", { class: "tchart-focus", "aria-hidden": "true", visibility: "hidden" });
    this.guideLine = el("line", { y1: m.top, y2: m.top + ih });
    this.guideDot = el("circle", { r: 4.5 });
    this.guide.append(this.guideLine, this.guideDot);
    svg.append(this.guide);
    this.mid = mid;
    if (this.focus >= 0) this.setFocus(this.focus);
  }

  describe() {
    const d = this.data;
    const pts = this.points;
    if (!pts.length) return `${d.metricLabel}: no data in this window.`;
    let max = 0;
    pts.forEach((p, i) => { if (p.value > pts[max].value) max = i; });
    const total = pts.reduce((s, p) => s + p.value, 0);
    return `${d.metricLabel} per ${d.granularity}, ${pts.length} points from ${bucketLabel(pts[0], d.tz, d.granularity)} to ${bucketLabel(pts[pts.length - 1], d.tz, d.granularity)}. ` +
      `Highest ${d.format(pts[max].value)} (${bucketLabel(pts[max], d.tz, d.granularity)}). Sum ${d.format(total)}.`;
  }

  renderTable() {
    const d = this.data;
    const table = h("table", { class: "data" });
    table.append(h("caption", { class: "sr-only" }, `${d.metricLabel} per ${d.granularity} (${d.tz})`));
    const thead = h("thead");
    const tr = h("tr");
    tr.append(h("th", { scope: "col" }, "Period"), h("th", { scope: "col", class: "num" }, d.metricLabel));
    thead.append(tr);
    const tbody = h("tbody");
    for (const p of this.points) {
      const row = h("tr");
      row.append(h("th", { scope: "row" }, bucketLabel(p, d.tz, d.granularity) + (p.partial ? " (partial)" : "")), h("td", { class: "num" }, d.format(p.value)));
      tbody.append(row);
    }
    table.append(thead, tbody);
    this.tableWrap.replaceChildren(table);
  }

  onPointer(e) {
    if (!this.geom || !this.points.length) return;
    const rect = this.svg.getBoundingClientRect();
    const px = ((e.clientX - rect.left) / rect.width) * this.geom.width;
    let best = -1, bestDist = Infinity;
    this.points.forEach((p, i) => {
      const dist = Math.abs(this.mid(p) - px);
      if (dist < bestDist) { bestDist = dist; best = i; }
    });
    this.setFocus(best, false);
  }

  onKey(e) {
    const n = this.points.length;
    if (!n) return;
    let i = this.focus;
    if (e.key === "ArrowRight") i = i < 0 ? 0 : Math.min(n - 1, i + 1);
    else if (e.key === "ArrowLeft") i = i < 0 ? n - 1 : Math.max(0, i - 1);
    else if (e.key === "Home") i = 0;
    else if (e.key === "End") i = n - 1;
    else if (e.key === "Escape") i = -1;
    else return;
    e.preventDefault();
    this.setFocus(i, true);
  }

  setFocus(i, announce = false) {
    this.focus = i;
    const bars = this.svg.querySelectorAll("rect.bar.active");
    bars.forEach((b) => b.classList.remove("active"));
    if (i < 0 || !this.geom || !this.points[i]) {
      this.tooltip.hidden = true;
      this.guide?.setAttribute("visibility", "hidden");
      return;
    }
    const d = this.data;
    const p = this.points[i];
    const cx = this.mid(p), cy = this.geom.y(p.value);
    this.guideLine.setAttribute("x1", cx);
    this.guideLine.setAttribute("x2", cx);
    this.guideDot.setAttribute("cx", cx);
    this.guideDot.setAttribute("cy", cy);
    this.guide.setAttribute("visibility", "visible");
    this.guideDot.setAttribute("visibility", this.bars ? "hidden" : "visible");
    this.svg.querySelector(`rect.bar[data-i="${i}"]`)?.classList.add("active");
    const when = bucketLabel(p, d.tz, d.granularity);
    this.tooltip.replaceChildren(h("span", { class: "tip-when" }, when), h("strong", {}, `${d.format(p.value)}`), h("span", { class: "tip-metric" }, ` ${d.metricLabel}`),
      p.partial ? h("span", { class: "tip-note" }, "Partial period (cut by the window edge)") : "");
    this.tooltip.hidden = false;
    const scale = this.svg.getBoundingClientRect().width / this.geom.width || 1;
    const tipW = this.tooltip.offsetWidth;
    const wrapW = this.figure.clientWidth;
    let left = cx * scale - tipW / 2;
    left = Math.max(4, Math.min(wrapW - tipW - 4, left));
    this.tooltip.style.left = `${left}px`;
    this.tooltip.style.top = `${Math.max(0, cy * scale - this.tooltip.offsetHeight - 14)}px`;
    if (announce) this.live.textContent = `${when}: ${d.format(p.value)} ${d.metricLabel}${p.partial ? " (partial period)" : ""}`;
  }
}
