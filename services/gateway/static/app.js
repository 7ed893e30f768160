// canal dashboard: page logic.
//
// One "view" = one pubkey, one window, one time zone. The first summary answer
// fixes the window (meta.window); every other request of the view then uses
// that explicit start/end, so all panels describe the same window. Newer views
// supersede older ones (AbortController); old data stays visible, dimmed.

import * as api from "./api.js";
import { TimeChart, formatInZone, zonedParts, GRANULARITY_SECONDS } from "./chart.js";

// ---------------------------------------------------------------- constants

const PRESETS = ["24h", "7d", "30d", "90d", "365d", "all"];
const ROLLING = { "1h": 3600, "24h": 86400, "7d": 604800, "30d": 2_592_000, "90d": 7_776_000, "365d": 31_536_000 };
const ESTIMATE_ABOVE = 90 * 86400;
const MAX_SPAN = 315_576_000;
const MAX_POINTS = 1000;
const PAGE_SIZE = 25;
const TIME_PAGE = 500;
const STORE_KEY = "canal.dashboard.v1";

const nf = new Intl.NumberFormat();
const pf = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const satsFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

const sats = (msats) => satsFmt.format(msats / 1000);

/** Every metric of METRICS.md with a label and a formatter. */
const METRICS = {
  "zaps.count": { label: "Zaps" },
  "zaps.msats": { label: "Sats zapped", format: sats, axis: (v) => compact.format(v / 1000), unit: "sats" },
  "zaps.unique_senders": { label: "Unique zappers" },
  "reactions.count": { label: "Reactions" },
  "reactions.likes": { label: "Likes" },
  "reactions.dislikes": { label: "Dislikes", invert: true },
  "reactions.unique_actors": { label: "Unique reactors" },
  "reposts.count": { label: "Reposts" },
  "replies.count": { label: "Replies" },
  "quotes.count": { label: "Quotes" },
  "mentions.count": { label: "Mentions" },
  "followers.gained": { label: "Followers gained" },
  "followers.lost": { label: "Followers lost", invert: true },
  "followers.net": { label: "Net followers", signed: true },
  "followers.total": { label: "Total followers" },
  "notes.count": { label: "Notes" },
  "articles.count": { label: "Articles" },
};
const fmtMetric = (name, v) => (METRICS[name]?.format ? METRICS[name].format(v) : nf.format(v));

const CARDS = [
  { id: "zaps", title: "Zaps", primary: "zaps.msats", secondary: ["zaps.count", "zaps.unique_senders"], wide: true },
  { id: "reactions", title: "Reactions", primary: "reactions.count", secondary: ["reactions.likes", "reactions.dislikes", "reactions.unique_actors"], wide: true },
  { id: "followers", title: "Followers", primary: "followers.total", secondary: ["followers.gained", "followers.lost", "followers.net"], wide: true },
  { id: "reposts", title: "Reposts", primary: "reposts.count" },
  { id: "replies", title: "Replies", primary: "replies.count" },
  { id: "quotes", title: "Quotes", primary: "quotes.count" },
  { id: "mentions", title: "Mentions", primary: "mentions.count" },
  { id: "notes", title: "Notes", primary: "notes.count" },
  { id: "articles", title: "Articles", primary: "articles.count" },
];
const SECONDARY_LABEL = {
  "zaps.count": "zaps", "zaps.unique_senders": "zappers", "reactions.likes": "likes", "reactions.dislikes": "dislikes",
  "reactions.unique_actors": "people", "followers.gained": "gained", "followers.lost": "lost", "followers.net": "net",
};

const ENGAGEMENT = ["zaps.msats", "zaps.count", "reactions.count", "reposts.count", "replies.count", "quotes.count"];
const TABS = [
  { dim: "note", label: "Top notes" },
  { dim: "counterparty", label: "Top people" },
  { dim: "kind", label: "By kind" },
];
const KIND_NAMES = {
  1: "Short text note", 3: "Follow list", 6: "Repost", 7: "Reaction", 16: "Generic repost",
  1111: "Comment", 9735: "Zap receipt", 30023: "Long-form article",
};
const GRANULARITIES = ["minute", "hour", "day", "week", "month"];

const PARTIAL_REASONS = {
  retention: "Part of this window is older than the raw-data retention; edges are approximate to the hour/day.",
  relay_behind: "A relay is behind; its most recent events may be missing.",
  relay_lag: "A relay is behind; its most recent events may be missing.",
  relay_unhealthy: "A relay could not be reached; events only it carries may be missing.",
  timeout: "Part of the query timed out; some numbers are incomplete.",
  late_data: "Late-arriving events are still being folded into the totals.",
  unresolved_replies: "Some replies wait for their parent note and are not counted yet.",
  shard_unavailable: "Part of the data store did not answer; some numbers are incomplete.",
  ingest_lag: "Ingest is behind; the newest activity is not counted yet.",
  backfilling: "canal started tracking this key recently and is still reading its history from relays; numbers will grow until the backfill finishes.",
  not_tracked: "canal does not track this key on relays: it counts only what it saw while following other keys. Track it with `canal track add` or the admin API.",
};
const PANEL_NAMES = { summary: "overview", prev: "comparison", chart: "chart", drilldown: "breakdown" };

// ---------------------------------------------------------------- tiny DOM helpers

const $ = (sel, root = document) => root.querySelector(sel);
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c != null && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}

// ---------------------------------------------------------------- time helpers

const browserTz = () => Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const nowSec = () => Math.floor(Date.now() / 1000);
const pad = (n) => String(n).padStart(2, "0");

/** 'YYYY-MM-DDTHH:mm' (datetime-local) of a unix time in a zone. */
function unixToWall(unix, tz) {
  const p = zonedParts(unix, tz);
  return `${String(p.y).padStart(4, "0")}-${pad(p.mo)}-${pad(p.d)}T${pad(p.h)}:${pad(p.mi)}`;
}

/** Unix time of a datetime-local wall time read in a zone (DST gaps resolve forward). */
function wallToUnix(wall, tz) {
  const m = /^(\d{4,})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(wall || "");
  if (!m) return null;
  const asUtc = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]) / 1000;
  const offsetAt = (t) => {
    const p = zonedParts(t, tz);
    return Date.UTC(p.y, p.mo - 1, p.d, p.h, p.mi, p.s) / 1000 - t;
  };
  let t = asUtc - offsetAt(asUtc);
  const second = offsetAt(t);
  if (asUtc - second !== t) t = asUtc - second;
  return t;
}

function fmtDuration(sec) {
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec} s`;
  if (sec < 3600) return `${Math.round(sec / 60)} min`;
  if (sec < 86400) {
    const hh = Math.floor(sec / 3600), mm = Math.round((sec % 3600) / 60);
    return mm ? `${hh} h ${mm} min` : `${hh} h`;
  }
  return `${Math.round(sec / 86400)} d`;
}
const fmtDateTime = (unix, tz) => formatInZone(unix, tz, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const fmtTime = (unix, tz) => formatInZone(unix, tz, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });

// ---------------------------------------------------------------- state

const state = {
  config: null,
  pubkey: "",
  sel: { preset: "7d" }, // or {start, end}
  tz: browserTz(),
  gran: "auto",
  chartMetric: "reactions.count",
  tab: "note",
  sortMetric: "zaps.msats",
  customDirty: false,
  confirmedKey: null,
};

/** The current view: fixed once the first summary answers. */
let view = null;
let viewSeq = 0;
let viewCtrl = null;
const metas = new Map(); // panel key -> meta of the data it shows
const errors = new Map(); // source key -> ApiError

// ---------------------------------------------------------------- panels

class Panel {
  constructor(key, root) {
    this.key = key;
    this.root = root;
    this.ctrl = null;
    this.job = null;
  }

  /** Starts a request for this panel, superseding its previous one. */
  start(parentSignal) {
    this.supersede();
    const ctrl = new AbortController();
    if (parentSignal) {
      if (parentSignal.aborted) ctrl.abort();
      else parentSignal.addEventListener("abort", () => ctrl.abort(), { once: true });
    }
    this.ctrl = ctrl;
    this.setBusy(true);
    return ctrl.signal;
  }

  supersede() {
    this.ctrl?.abort();
    if (this.job) {
      api.cancelJob(this.job);
      this.job = null;
    }
    if (this.root) $(".job-slot", this.root).replaceChildren();
  }

  done(signal) {
    if (signal && this.ctrl?.signal !== signal) return;
    this.setBusy(false);
  }

  setBusy(busy) {
    if (!this.root) return;
    this.root.classList.toggle("is-busy", busy);
    this.root.setAttribute("aria-busy", String(busy));
  }

  /** Records the meta of the data now shown and updates the source tag. */
  setMeta(meta) {
    metas.set(this.key, meta);
    this.viewSeq = view?.seq ?? null;
    errors.delete(this.key);
    if (this.root) {
      const csv = $('[data-testid="csv-download"]', this.root);
      if (csv) csv.disabled = false;
      const tag = $('[data-testid="source-tag"]', this.root);
      tag.hidden = false;
      tag.textContent = meta.source;
      tag.dataset.source = meta.source;
      tag.title = describeMeta(meta);
      this.updateNote();
    }
    refreshStatus();
  }

  /**
   * Says so when this panel's window or as_of differs from the view's (never a silent mismatch).
   * as_of only matters up to the window's end: two answers whose as_of are both at or after the
   * end reflect every fact of the window, so they agree even if they were computed a second apart.
   */
  updateNote() {
    if (!this.root || !view) return;
    const meta = metas.get(this.key);
    const note = $(".panel-note", this.root);
    const bits = [];
    const w = meta?.window;
    if (w && w.start !== view.window.start) bits.push(`window starts ${fmtDateTime(w.start, view.tz)}:${pad(zonedParts(w.start, view.tz).s)}`);
    if (w && w.end !== view.window.end) bits.push(`window ends ${fmtTime(w.end, view.tz)}`);
    const top = view.asOf;
    const own = meta?.freshness?.asOf;
    const covered = (t, end) => Math.min(t, end);
    if (top != null && own != null && covered(own, w?.end ?? view.window.end) !== covered(top, view.window.end)) {
      bits.push(`as of ${fmtTime(own, view.tz)}`);
    }
    note.textContent = bits.join(" · ");
    note.hidden = !bits.length;
    // What this panel shows, machine-readably (tests and support read these).
    const d = this.root.dataset;
    if (w) { d.windowStart = String(w.start); d.windowEnd = String(w.end); d.windowLabel = w.label ?? ""; }
    if (own != null) d.asOf = String(own); else delete d.asOf;
    d.consistent = String(!bits.length);
  }
}

function describeMeta(meta) {
  const lines = [meta.source === "canonical" ? "Answered by the canonical (rollup) path" : meta.source === "legacy" ? "Answered by the legacy (raw scan) path" : "Path not reported"];
  if (meta.cache) lines.push(`Cache: ${meta.cache}`);
  const tiers = meta.plan?.tiers;
  if (tiers) lines.push(`Plan: ${Object.entries(tiers).map(([k, v]) => `${k} ${nf.format(v)}`).join(", ")}`);
  if (meta.plan?.raw_facts_scanned != null) lines.push(`Raw facts scanned: ${nf.format(meta.plan.raw_facts_scanned)}`);
  if (meta.requestId) lines.push(`Request ${meta.requestId}`);
  return lines.join("\n");
}

const panels = {};

// ---------------------------------------------------------------- status: window, as_of, freshness, banners

function renderWindowLabel() {
  const wl = $("#window-label");
  const asOf = $("#as-of");
  if (!view) return;
  const { start, end, label } = view.window;
  const name = label && label !== "custom" ? label : "Custom";
  const range = start === 0 ? `All time – ${fmtDateTime(end, view.tz)}` : `${fmtDateTime(start, view.tz)} – ${fmtDateTime(end, view.tz)}`;
  wl.replaceChildren(h("span", { class: "window-name" }, name), " ", range, h("span", { class: "muted" }, ` (${view.tz})`));
  wl.dataset.start = String(start);
  wl.dataset.end = String(end);
  wl.dataset.label = label || "custom";
  if (view.asOf != null) {
    asOf.textContent = fmtDateTime(view.asOf, view.tz) + ":" + pad(zonedParts(view.asOf, view.tz).s);
    asOf.dataset.value = String(view.asOf);
    asOf.title = `Unix ${view.asOf}`;
  } else {
    asOf.textContent = view.asOfPending ? "computing…" : "not reported";
    delete asOf.dataset.value;
  }
  $("#footer-tz").textContent = `All times in ${view.tz}`;
}

function serverNow(fr) {
  return Date.now() / 1000 + (fr?.serverSkew || 0);
}

function freshnessState() {
  const list = [...metas.values()];
  const fr = list.map((m) => m.freshness).filter(Boolean);
  const primary = metas.get("summary")?.freshness ?? fr[0] ?? null;
  if (!primary) {
    const legacy = list.some((m) => m.source === "legacy");
    return { cls: "badge-muted", text: list.length ? "Freshness not reported" : "Not loaded yet", title: legacy ? "The legacy path does not report freshness." : "" };
  }
  const unhealthy = fr.flatMap((f) => f.relays).filter((r) => !r.healthy);
  const age = primary.asOf != null ? serverNow(primary) - primary.asOf : primary.lagSeconds ?? 0;
  if (unhealthy.length) {
    unhealthy.sort((a, b) => (b.lagSeconds ?? 0) - (a.lagSeconds ?? 0));
    const r = unhealthy[0];
    const more = new Set(unhealthy.map((x) => x.url)).size - 1;
    const behind = r.lagSeconds != null ? ` ${fmtDuration(r.lagSeconds)} behind` : " unreachable";
    return { cls: "badge-warn", text: `Delayed: relay ${r.url}${behind}${more > 0 ? ` (+${more} more)` : ""}`, title: unhealthy.map((x) => `${x.url}: ${x.lagSeconds != null ? fmtDuration(x.lagSeconds) + " behind" : "unhealthy"}`).join("\n") };
  }
  if (fr.some((f) => f.stale) || list.some((m) => m.fallback)) {
    return { cls: "badge-warn", text: `Delayed: data ${fmtDuration(age)} behind`, title: primary.asOf != null ? `Newest facts: ${fmtDateTime(primary.asOf, view?.tz || state.tz)}` : "" };
  }
  return { cls: "badge-ok", text: `Up to date · as of ${fmtDuration(age)} ago`, title: primary.watermark != null ? `Compaction watermark: ${fmtDateTime(primary.watermark, view?.tz || state.tz)}` : "" };
}

function renderFreshness() {
  const b = $("#freshness-badge");
  const s = freshnessState();
  if (b.textContent !== s.text) b.textContent = s.text;
  b.className = `badge ${s.cls}`;
  b.title = s.title;
}

function humanReason(r) {
  const base = PARTIAL_REASONS[r.code] ?? (r.code.charAt(0).toUpperCase() + r.code.slice(1).replace(/[_.-]+/g, " ") + ".");
  return r.detail ? `${base} (${r.detail})` : base;
}

/** " (overview, chart)" when only some panels are affected; "" when all are. */
function panelList(keys) {
  if (keys.length >= metas.size) return "";
  const order = Object.keys(PANEL_NAMES);
  return ` (${[...keys].sort((a, b) => order.indexOf(a) - order.indexOf(b)).map((k) => PANEL_NAMES[k] || k).join(", ")})`;
}

function renderBanners() {
  const tz = view?.tz || state.tz;
  // stale: a fallback answer (last good) or data known to be behind
  const stale = $("#stale-banner");
  const fallbackKeys = [...metas].filter(([, m]) => m.fallback).map(([k]) => k);
  const laggingKeys = [...metas].filter(([, m]) => !m.fallback && m.freshness?.stale).map(([k]) => k);
  if (fallbackKeys.length) {
    const m = metas.get(fallbackKeys[0]);
    const at = m.freshness?.asOf;
    stale.replaceChildren(
      h("strong", {}, "Showing the last good answer"),
      at != null ? `, computed ${fmtDateTime(at, tz)} (${fmtDuration(serverNow(m.freshness) - at)} ago).` : ".",
      ` The live query did not answer in time, so these numbers may be behind${panelList(fallbackKeys)}.`,
    );
    stale.hidden = false;
  } else if (laggingKeys.length) {
    const m = metas.get(laggingKeys[0]);
    const at = m.freshness?.asOf;
    stale.replaceChildren(h("strong", {}, "Data is delayed"), at != null ? `: facts are counted up to ${fmtDateTime(at, tz)}.` : ".", " The most recent activity may be missing.");
    stale.hidden = false;
  } else {
    stale.hidden = true;
    stale.replaceChildren();
  }
  // partial
  const partial = $("#partial-banner");
  const reasons = new Map();
  for (const [k, m] of metas) {
    if (!m.partial) continue;
    const list = m.partialReasons.length ? m.partialReasons : [{ code: "unspecified", detail: null }];
    for (const r of list) {
      const text = r.code === "unspecified" ? "Some part of the window could not be answered exactly." : humanReason(r);
      if (!reasons.has(text)) reasons.set(text, { codes: new Set(), panels: new Set() });
      reasons.get(text).codes.add(r.code);
      reasons.get(text).panels.add(k);
    }
  }
  if (reasons.size) {
    partial.replaceChildren(
      h("strong", {}, "Some numbers are approximate."),
      h("ul", {}, [...reasons].map(([text, info]) => h("li", { "data-reason": [...info.codes].join(" ") }, text, h("span", { class: "muted" }, panelList([...info.panels]))))),
    );
    partial.hidden = false;
  } else {
    partial.hidden = true;
    partial.replaceChildren();
  }
}

function renderErrors() {
  const banner = $("#error-banner");
  const uniq = new Map();
  for (const e of errors.values()) {
    const key = `${e.code}|${e.message}|${e.hint}`;
    if (!uniq.has(key)) uniq.set(key, e);
  }
  if (!uniq.size) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  const items = [...uniq.values()].map((e) =>
    h("div", { class: "error-item", "data-code": e.code, "data-hint-source": e.hintSource || (e.requestId ? "api" : "page") },
      h("strong", {}, e.message), e.hint ? h("span", { class: "error-hint", "data-testid": "error-hint" }, ` ${e.hint}`) : null,
      e.detail ? h("span", { class: "error-detail" }, ` ${e.detail}`) : null,
      h("span", { class: "error-code" }, ` ${e.code}${e.requestId ? ` · request ${e.requestId}` : ""}`)),
  );
  const close = h("button", { type: "button", class: "banner-close", "aria-label": "Dismiss", onclick: () => { errors.clear(); renderErrors(); } }, "×");
  const kept = summary.view && errors.has("input")
    ? h("div", { class: "error-kept" }, "The numbers below are still those of the last key and window that loaded.")
    : summary.view && summary.view !== view && (errors.has("summary") || errors.has("chart") || errors.has("drilldown"))
      ? h("div", { class: "error-kept" }, "The numbers below are still those of the last window that loaded.") : null;
  banner.replaceChildren(...items, kept || "", close);
  banner.hidden = false;
}

function setError(key, e) {
  if (api.isAbort(e)) return;
  if (!(e instanceof api.ApiError)) {
    console.error(e);
    e = new api.ApiError({ code: "CLIENT_ERROR", message: "Something went wrong on this page", hint: "Reload the page; if it persists, report it." });
  }
  errors.set(key, e);
  renderErrors();
}

function clearError(key) {
  if (errors.delete(key)) renderErrors();
}

function refreshStatus() {
  if (view && panels.summary.viewSeq === view.seq && metas.get("summary")?.freshness?.asOf != null) {
    view.asOf = metas.get("summary").freshness.asOf;
    view.asOfPending = false;
  }
  renderWindowLabel();
  renderFreshness();
  renderBanners();
  Object.values(panels).forEach((p) => p.updateNote());
}

// ---------------------------------------------------------------- jobs

/**
 * Follows a 202 job in a panel: progress bar, phase, Cancel. Resolves with the
 * result envelope, or null when the person cancelled it. `quiet` follows it
 * without any UI (the comparison request).
 */
async function followJob(panel, job, signal, { quiet = false } = {}) {
  panel.job = job;
  const slot = panel.root && !quiet ? $(".job-slot", panel.root) : null;
  const jobCtrl = new AbortController();
  signal.addEventListener("abort", () => jobCtrl.abort(), { once: true });
  let cancelled = false;
  let ui = null;
  if (slot) {
    const progress = h("progress", { "data-testid": "job-progress", max: "1", value: "0", "aria-label": "Job progress" });
    const phase = h("span", { class: "job-phase", "data-testid": "job-phase" }, api.JOB_PHASES[job.state] || "Queued");
    const pct = h("span", { class: "job-pct" }, "0%");
    const cancel = h("button", {
      type: "button", class: "btn btn-small", "data-testid": "job-cancel",
      onclick: async () => {
        cancelled = true;
        cancel.disabled = true;
        phase.textContent = "Cancelling…";
        jobCtrl.abort();
        await api.cancelJob(job);
      },
    }, "Cancel");
    const box = h("div", { class: "job", role: "group", "aria-label": "Background job" },
      h("div", { class: "job-row" },
        h("span", { class: "job-title" }, "Running as a background job"),
        h("span", { class: "job-status", "aria-live": "polite" }, phase, " · ", pct),
        cancel),
      progress);
    slot.replaceChildren(box);
    ui = { box, progress, phase, pct };
  }
  try {
    const res = await api.waitForJob(job, {
      signal: jobCtrl.signal,
      onUpdate: (st) => {
        if (!ui) return;
        ui.progress.value = st.progress;
        ui.pct.textContent = `${Math.round(st.progress * 100)}%`;
        ui.phase.textContent = api.JOB_PHASES[st.phase] || api.JOB_PHASES[st.state] || st.phase || st.state || "Running";
        ui.phase.dataset.phase = st.phase || st.state || "";
      },
    });
    panel.job = null;
    if (slot) {
      const json = api.withParam(res.resultUrl, "format", "json");
      const csv = api.withParam(res.resultUrl, "format", "csv");
      const dl = (href, fmt, testid) => h("a", {
        href, class: "job-link", "data-testid": testid, download: `canal-${panel.key}-${job.id}.${fmt}`,
        onclick: (e) => { e.preventDefault(); api.download(href, `canal-${panel.key}-${job.id}.${fmt}`).catch((err) => setError("download", err)); },
      }, fmt.toUpperCase());
      slot.replaceChildren(h("div", { class: "job job-done" },
        h("span", { class: "job-title" }, "Computed as a background job"),
        h("span", { class: "job-links" }, "Download ", dl(json, "json", "job-download-json"), " ", dl(csv, "csv", "job-download-csv"))));
    }
    return res;
  } catch (e) {
    panel.job = null;
    if (cancelled) {
      slot?.replaceChildren(h("div", { class: "job job-cancelled", role: "status" }, "Job cancelled. The previous numbers are still shown."));
      return null;
    }
    if (api.isAbort(e)) throw e;
    if (slot) {
      slot.replaceChildren(h("div", { class: "job job-failed", role: "alert" },
        h("strong", {}, e.message), e.hint ? ` ${e.hint}` : ""));
    }
    throw e;
  }
}

/** Runs one API call for a panel, following a 202 job when one comes back. */
async function runForPanel(panel, call, signal, opts) {
  let res = await call(signal);
  if (res.kind === "job" && res.job) {
    res = await followJob(panel, res.job, signal, opts);
  }
  return res;
}

// ---------------------------------------------------------------- summary cards

// What the cards show: the metrics and the view they belong to. The comparison
// lives on that view (view.prev, view.prevState: loading|ready|unavailable|error),
// so old deltas stay with old numbers while a newer view loads.
const summary = { current: null, view: null };

function buildCards() {
  const root = $("#cards");
  root.replaceChildren(...CARDS.map((c) => {
    const card = h("article", { class: `card${c.wide ? " card-wide" : ""}`, "data-card": c.id, "aria-labelledby": `card-${c.id}-title` },
      h("h3", { class: "card-title", id: `card-${c.id}-title` }, c.title),
      h("div", { class: "stat stat-primary", "data-testid": `summary-card-${c.primary}`, "data-metric": c.primary },
        h("span", { class: "stat-value" }, "—"),
        c.primary === "zaps.msats" ? h("span", { class: "stat-unit" }, "sats") : null,
        h("span", { class: "delta" })),
    );
    if (c.secondary) {
      card.append(h("dl", { class: "stat-list" }, c.secondary.map((m) =>
        h("div", { class: "stat stat-secondary", "data-testid": `summary-card-${m}`, "data-metric": m },
          h("dt", {}, SECONDARY_LABEL[m] || METRICS[m].label),
          h("dd", {}, h("span", { class: "stat-value" }, "—"), h("span", { class: "delta" }))))));
    }
    return card;
  }));
}

function deltaParts(name, cur, prev) {
  const d = cur - prev;
  const sign = d > 0 ? "+" : d < 0 ? "−" : "±";
  const abs = Math.abs(d);
  const absText = name === "zaps.msats" ? sats(abs) : nf.format(abs);
  let pct = "";
  if (prev !== 0) pct = `${d > 0 ? "+" : d < 0 ? "−" : "±"}${pf.format(Math.abs((d / Math.abs(prev)) * 100))}%`;
  else if (cur !== 0) pct = "new";
  const good = METRICS[name]?.invert ? d < 0 : d > 0;
  const dir = d === 0 ? "flat" : good ? "up" : "down";
  return { text: `${sign}${absText}`, pct, dir, d };
}

function renderSummary() {
  const cur = summary.current;
  const sv = summary.view;
  const prevState = sv?.prevState ?? "none";
  const prevLabel = sv?.window.label && sv.window.label !== "custom" ? `previous ${sv.window.label}` : "previous period";
  for (const node of document.querySelectorAll("#cards .stat")) {
    const name = node.dataset.metric;
    const valueEl = $(".stat-value", node);
    const deltaEl = $(".delta", node);
    const v = cur?.[name];
    if (typeof v !== "number") {
      valueEl.textContent = "—";
      node.removeAttribute("data-value");
      node.removeAttribute("title");
      deltaEl.textContent = "";
      continue;
    }
    node.dataset.value = String(v);
    valueEl.textContent = fmtMetric(name, v);
    node.title = name === "zaps.msats" ? `${nf.format(v)} msats` : `${METRICS[name].label}: ${nf.format(v)}`;
    const prev = sv?.prev?.[name];
    deltaEl.className = "delta";
    deltaEl.removeAttribute("title");
    delete deltaEl.dataset.delta;
    if (prevState === "ready" && typeof prev === "number") {
      const p = deltaParts(name, v, prev);
      deltaEl.classList.add(`delta-${p.dir}`);
      deltaEl.dataset.delta = String(p.d);
      deltaEl.textContent = node.classList.contains("stat-primary") ? `${p.text}${p.pct ? ` (${p.pct})` : ""}` : p.text;
      deltaEl.title = `${p.text}${p.pct ? ` (${p.pct})` : ""} vs ${prevLabel}: ${fmtMetric(name, prev)}${name === "zaps.msats" ? ` sats (${nf.format(prev)} msats)` : ""}`;
      deltaEl.setAttribute("aria-label", `${p.text}${p.pct ? `, ${p.pct}` : ""} versus ${prevLabel}`);
    } else {
      deltaEl.textContent = node.classList.contains("stat-primary") && prevState === "loading" ? "…" : "";
      deltaEl.removeAttribute("aria-label");
    }
  }
  const note = $("#compare-note");
  if (prevState === "ready") note.textContent = `Changes compare with the ${prevLabel} of equal length (${fmtDateTime(sv.window.start - (sv.window.end - sv.window.start), sv.tz)} – ${fmtDateTime(sv.window.start, sv.tz)}).`;
  else if (prevState === "unavailable") note.textContent = sv.prevReason;
  else if (prevState === "error") note.textContent = "The comparison with the previous period could not be loaded.";
  else if (prevState === "loading") note.textContent = "Loading the comparison with the previous period…";
  else note.textContent = "";
}

// ---------------------------------------------------------------- chart

let chart = null;
let chartRows = [];

function autoGranularity(span) {
  if (span <= 6 * 3600) return "minute";
  if (span <= 7 * 86400) return "hour";
  if (span <= 180 * 86400) return "day";
  if (span <= 3 * 366 * 86400) return "week";
  return "month";
}

const spanOf = (w) => Math.max(1, w.end - w.start);
const fitsPoints = (g, span) => Math.ceil(span / GRANULARITY_SECONDS[g]) <= MAX_POINTS;

function effectiveGranularity() {
  if (!view) return "day";
  const span = spanOf(view.window);
  if (state.gran !== "auto" && fitsPoints(state.gran, span)) return state.gran;
  return autoGranularity(span);
}

function renderGranularityOptions() {
  const sel = $("#granularity");
  const span = view ? spanOf(view.window) : 7 * 86400;
  const auto = view ? (state.gran === "auto" && view.gran ? view.gran : autoGranularity(span)) : "hour";
  sel.replaceChildren(
    h("option", { value: "auto" }, `Auto (${auto})`),
    ...GRANULARITIES.map((g) => h("option", { value: g, disabled: !fitsPoints(g, span), title: fitsPoints(g, span) ? null : "More than 1,000 points in this window" }, g.charAt(0).toUpperCase() + g.slice(1))),
  );
  sel.value = state.gran !== "auto" && fitsPoints(state.gran, span) ? state.gran : "auto";
}

function renderChart() {
  if (!chart) chart = new TimeChart($("#chart"));
  const name = state.chartMetric;
  let rows = chartRows;
  if (view?.window.start === 0) {
    // "all" starts in 1970: begin the chart at the first bucket with any activity.
    const first = rows.findIndex((r) => Object.values(r.metrics || {}).some((x) => x));
    rows = first > 0 ? rows.slice(first) : rows;
  }
  const points = rows
    .map((r) => ({ start: api.toUnix(r.start ?? r.key), end: api.toUnix(r.end), value: Number(r.metrics?.[name] ?? 0) }))
    .filter((p) => p.start != null)
    .sort((a, b) => a.start - b.start);
  points.forEach((p, i) => { if (p.end == null) p.end = points[i + 1]?.start ?? p.start + GRANULARITY_SECONDS[view.gran]; });
  const meta = METRICS[name];
  $("#chart").dataset.metric = name;
  $("#chart").dataset.granularity = view?.gran || "";
  $("#chart").dataset.points = String(points.length);
  chart.setData({
    points, tz: view?.tz || state.tz, granularity: view?.gran || "day",
    metricLabel: meta.unit === "sats" ? "sats zapped" : meta.label.toLowerCase(),
    format: (v) => fmtMetric(name, v),
    formatAxis: meta.axis || ((v) => compact.format(v)),
  });
}

/** Every row of a time series at one granularity (follows jobs and pages); null when cancelled. */
async function fetchSeries(panel, v, gran, signal) {
  const rows = [];
  let cursor = null, meta = null;
  do {
    const params = { ...v.base, ...v.explicit, dimension: "time", granularity: gran, limit: TIME_PAGE, cursor };
    const res = await runForPanel(panel, (s) => api.getDrilldown(params, { signal: s }), signal);
    if (!res) return null;
    rows.push(...(res.data.rows || []));
    cursor = res.data.next_cursor || null;
    meta = res.meta;
  } while (cursor && rows.length < MAX_POINTS * 2);
  return { rows, meta };
}

const GRAN_ADJ = { minute: "Per-minute", hour: "Hourly", day: "Daily", week: "Weekly", month: "Monthly" };

function renderChartNote(v) {
  const note = $("#chart-note");
  note.textContent = v?.granNote || "";
  note.hidden = !v?.granNote;
}

async function loadChart() {
  if (!view) return;
  const panel = panels.chart;
  const v = view;
  const signal = panel.start(viewCtrl?.signal);
  v.gran = effectiveGranularity();
  v.granNote = "";
  renderGranularityOptions();
  try {
    let got = await fetchSeries(panel, v, v.gran, signal);
    if (!got) return panel.done(signal);
    const lost = (m) => m?.partial && m.partialReasons.some((r) => r.code === "retention");
    if (lost(got.meta) && GRANULARITY_SECONDS[v.gran] < 86400 && state.gran === "auto" && fitsPoints("day", spanOf(v.window))) {
      // Finer rollups are past retention here; days are kept for good, so show days, not empty hours.
      const fine = v.gran;
      const again = await fetchSeries(panel, v, "day", signal);
      if (!again) return panel.done(signal);
      got = again;
      v.gran = "day";
      v.granNote = `${GRAN_ADJ[fine]} detail is no longer kept for part of this window, so the chart shows days.`;
      if (lost(got.meta)) v.granNote += " The days at the window's edges are approximate.";
      renderGranularityOptions();
    } else if (lost(got.meta)) {
      v.granNote = `Part of this window is past the retention of ${GRAN_ADJ[v.gran].toLowerCase()} data: some buckets may count too little.`;
    }
    if (view !== v) return;
    chartRows = got.rows;
    renderChart();
    renderChartNote(v);
    panel.setMeta(got.meta);
  } catch (e) {
    if (!api.isAbort(e)) setError("chart", e);
  } finally {
    panel.done(signal);
  }
}

// ---------------------------------------------------------------- drilldown tables

const drill = { rows: [], nextCursor: null, dim: null, metric: null, cache: new Map() };

const shortHex = (s, a = 8, b = 4) => (s.length > a + b + 1 ? `${s.slice(0, a)}…${s.slice(-b)}` : s);
function shortNoteKey(key) {
  if (/^[0-9a-f]{64}$/.test(key)) {
    const note = api.hexToBech32("note", key);
    return note ? shortHex(note, 10, 6) : shortHex(key);
  }
  const m = /^(\d+):([0-9a-f]{64}):(.*)$/s.exec(key);
  if (m) return `${m[1]}:${shortHex(m[2], 6, 4)}:${m[3].length > 24 ? m[3].slice(0, 23) + "…" : m[3]}`;
  return shortHex(key, 12, 6);
}

function buildTabs() {
  const list = $("#drill-tabs");
  list.replaceChildren(...TABS.map((t) => h("button", {
    type: "button", role: "tab", id: `tab-${t.dim}`, "aria-controls": "drill-panel", "data-testid": `drilldown-tab-${t.dim}`,
    "data-dim": t.dim, class: "tab", onclick: () => selectTab(t.dim, false),
  }, t.label)));
  list.addEventListener("keydown", (e) => {
    const i = TABS.findIndex((t) => t.dim === state.tab);
    let j = null;
    if (e.key === "ArrowRight") j = (i + 1) % TABS.length;
    else if (e.key === "ArrowLeft") j = (i - 1 + TABS.length) % TABS.length;
    else if (e.key === "Home") j = 0;
    else if (e.key === "End") j = TABS.length - 1;
    if (j == null) return;
    e.preventDefault();
    selectTab(TABS[j].dim, true);
  });
  updateTabs();
}

function updateTabs() {
  for (const tab of document.querySelectorAll("#drill-tabs [role=tab]")) {
    const on = tab.dataset.dim === state.tab;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
  }
  $("#drill-panel").setAttribute("aria-labelledby", `tab-${state.tab}`);
  const sort = $("#sort-metric");
  sort.disabled = state.tab === "kind";
  sort.closest("label").classList.toggle("is-disabled", state.tab === "kind");
}

function selectTab(dim, focus) {
  if (focus) $(`#tab-${dim}`).focus();
  if (dim === state.tab) return;
  state.tab = dim;
  updateTabs();
  persist();
  loadDrilldown();
}

function sortHeader(metric, label) {
  const active = state.tab !== "kind" && state.sortMetric === metric;
  return h("th", { scope: "col", class: "num", "aria-sort": active ? "descending" : null },
    h("button", { type: "button", class: `th-sort${active ? " active" : ""}`, title: `Sort by ${label}`, onclick: () => setSortMetric(metric) }, label, active ? h("span", { "aria-hidden": "true", class: "sort-arrow" }, " ↓") : null));
}

function renderDrilldown() {
  const wrap = $("#drill-table");
  const dim = drill.dim || state.tab;
  const rows = drill.rows;
  const table = h("table", { class: "data drill" });
  const head = h("tr");
  const engagementCols = [["zaps.msats", "Sats"], ["zaps.count", "Zaps"], ["reactions.count", "Reactions"], ["reposts.count", "Reposts"], ["replies.count", "Replies"], ["quotes.count", "Quotes"]];
  if (dim === "kind") head.append(h("th", { scope: "col" }, "Kind"), h("th", { scope: "col" }, "What"), h("th", { scope: "col", class: "num" }, "Facts"));
  else head.append(h("th", { scope: "col", class: "rank" }, "#"), h("th", { scope: "col" }, dim === "note" ? "Note" : "Person"), ...engagementCols.map(([m, l]) => sortHeader(m, l)));
  table.append(h("caption", { class: "sr-only" }, `${TABS.find((t) => t.dim === dim).label}${dim !== "kind" ? `, sorted by ${METRICS[drill.metric || state.sortMetric].label}` : ""}`), h("thead", {}, head));
  const body = h("tbody");
  rows.forEach((r, i) => {
    const key = String(r.key ?? "");
    const tr = h("tr", { "data-testid": "drilldown-row", "data-key": key });
    const m = r.metrics || {};
    if (dim === "kind") {
      const kind = r.kind ?? Number(key);
      tr.append(h("td", { class: "mono" }, String(kind)), h("td", {}, KIND_NAMES[kind] || "Other"), h("td", { class: "num" }, nf.format(Number(m.facts ?? 0))));
    } else {
      let who;
      if (dim === "note") {
        who = h("td", { class: "key-cell" }, h("span", { class: "mono", title: key }, shortNoteKey(key)), r.deleted ? h("span", { class: "pill pill-deleted", title: "The author deleted this note; engagement it received still counts in the totals" }, "deleted") : null);
      } else {
        const npub = r.npub || api.hexToBech32("npub", key) || key;
        who = h("td", { class: "key-cell" }, r.display_name
          ? [h("span", { class: "person-name", title: npub }, r.display_name), h("span", { class: "mono muted person-npub" }, shortHex(npub, 10, 4))]
          : h("span", { class: "mono", title: npub }, shortHex(npub, 12, 6)));
      }
      tr.append(h("td", { class: "rank muted" }, String(i + 1)), who, ...engagementCols.map(([name]) => {
        const v = Number(m[name] ?? 0);
        return h("td", { class: `num${name === (drill.metric || state.sortMetric) ? " sorted" : ""}`, title: name === "zaps.msats" ? `${nf.format(v)} msats` : null }, fmtMetric(name, v));
      }));
    }
    body.append(tr);
  });
  table.append(body);
  if (!rows.length) {
    wrap.replaceChildren(h("p", { class: "empty" }, dim === "kind" ? "No counted facts in this window." : dim === "note" ? "No engagement on notes in this window." : "Nobody engaged in this window."));
  } else {
    wrap.replaceChildren(table);
  }
  $("#drill-more").hidden = !drill.nextCursor;
  $("#drill-count").textContent = rows.length ? `${nf.format(rows.length)} ${rows.length === 1 ? "row" : "rows"}${drill.nextCursor ? ", more available" : ""}` : "";
}

function setSortMetric(metric) {
  if (state.tab === "kind" || metric === state.sortMetric) return;
  state.sortMetric = metric;
  $("#sort-metric").value = metric;
  persist();
  loadDrilldown();
}

async function loadDrilldown({ append = false } = {}) {
  if (!view) return;
  const panel = panels.drilldown;
  const v = view;
  const dim = state.tab;
  const metric = dim === "kind" ? null : state.sortMetric;
  const cacheKey = `${dim}|${metric}`;
  if (!append && v.drillCache.has(cacheKey)) {
    panel.supersede();
    Object.assign(drill, v.drillCache.get(cacheKey), { dim, metric });
    renderDrilldown();
    panel.setMeta(drill.meta);
    panel.done();
    return;
  }
  const signal = panel.start(viewCtrl?.signal);
  const params = { ...v.base, ...v.explicit, dimension: dim, metric: metric || undefined, limit: PAGE_SIZE, cursor: append ? drill.nextCursor : undefined };
  const more = $("#drill-more");
  if (append) more.disabled = true;
  try {
    const res = await runForPanel(panel, (s) => api.getDrilldown(params, { signal: s }), signal);
    if (!res || view !== v) return;
    const rows = res.data.rows || [];
    drill.rows = append ? [...drill.rows, ...rows] : rows;
    drill.nextCursor = res.data.next_cursor || null;
    drill.dim = dim;
    drill.metric = metric;
    drill.meta = res.meta;
    v.drillCache.set(cacheKey, { rows: drill.rows, nextCursor: drill.nextCursor, meta: res.meta });
    renderDrilldown();
    panel.setMeta(res.meta);
  } catch (e) {
    if (!api.isAbort(e)) setError("drilldown", e);
  } finally {
    more.disabled = false;
    panel.done(signal);
  }
}

// ---------------------------------------------------------------- the view

function clientWindow(sel) {
  const end = nowSec();
  if (sel.preset) return { start: sel.preset === "all" ? 0 : end - ROLLING[sel.preset], end, label: sel.preset };
  return { start: sel.start, end: sel.end, label: "custom" };
}

function validateCustom(start, end) {
  const bad = (hint) => new api.ApiError({ status: 400, code: "INVALID_WINDOW", message: "That time range cannot be used", hint });
  if (start == null || end == null) return bad("Pick both a start and an end (to the minute).");
  if (start >= end) return bad("The start must be before the end.");
  if (end > nowSec() + 60) return bad("The end cannot be in the future.");
  if (end - start > MAX_SPAN) return bad("A custom range can span at most 10 years; use “all” for everything.");
  return null;
}

function readCustomInputs() {
  return { start: wallToUnix($("#custom-start").value, state.tz), end: wallToUnix($("#custom-end").value, state.tz) };
}

function fillCustomInputs(w) {
  if (!w) return;
  $("#custom-start").value = w.start > 0 ? unixToWall(w.start, state.tz) : "";
  $("#custom-end").value = unixToWall(w.end, state.tz);
  state.customDirty = false;
  updatePresetButtons();
}

function updatePresetButtons() {
  for (const b of document.querySelectorAll("#presets button")) {
    b.setAttribute("aria-pressed", String(!state.customDirty && state.sel.preset === b.dataset.window));
  }
  $(".custom-range").classList.toggle("is-active", state.customDirty || !state.sel.preset);
  $("#custom-apply").classList.toggle("btn-primary", state.customDirty);
}

function showEstimate(text, onRun) {
  const notice = $("#estimate-notice");
  $("#estimate-text").replaceChildren(...(Array.isArray(text) ? text : [text]));
  notice.hidden = false;
  $("#estimate-run").onclick = onRun;
  $("#estimate-run").disabled = !onRun;
}

function hideEstimate() {
  $("#estimate-notice").hidden = true;
}

function describeEstimate(est, span) {
  const days = Math.round(span / 86400);
  const parts = [`This window covers ${nf.format(days)} days.`];
  if (est?.cost != null) {
    parts.push(` Estimated cost ${nf.format(est.cost)}${est.syncLimit != null ? ` (direct answers go up to ${nf.format(est.syncLimit)})` : ""}.`);
  }
  const tiers = est?.plan?.tiers;
  if (tiers) {
    const t = Object.entries(tiers).filter(([, n]) => n).map(([k, n]) => `${nf.format(n)} ${k} rollups`);
    if (t.length) parts.push(` It reads ${t.join(", ")}${est.plan.raw_facts_scanned ? ` and about ${nf.format(est.plan.raw_facts_scanned)} raw facts` : ""}.`);
  }
  parts.push(est?.async
    ? " It will run as a background job: you can follow its progress here, cancel it, and download the result."
    : est ? " It should answer directly, but may take a moment." : "");
  return parts.join("");
}

/**
 * The API has the last word on what a valid pubkey is: ask it, and show its code, hint and
 * request id (with the page's more specific diagnosis as a detail). The local check above
 * answers instantly; this replaces it when the API answers. The data shown stays as it is.
 */
async function explainInvalidPubkey(raw, local) {
  const typed = String(raw ?? "");
  try {
    await api.getSummary({ pubkey: typed.trim(), window: "24h", metrics: "zaps.count" });
  } catch (e) {
    if (!(e instanceof api.ApiError) || e.status !== 400 || $("#pubkey").value !== typed || !errors.has("input")) return;
    const merged = new api.ApiError({ status: e.status, code: e.code, message: local.message, hint: e.hint || local.hint, requestId: e.requestId });
    merged.detail = local.hint && local.hint !== e.hint ? local.hint : "";
    merged.hintSource = "api";
    setError("input", merged);
  }
}

const KEY_HELP = "An npub1…, nprofile1…, 64-character lowercase hex key, or a NIP-05 name@domain.";

/** The help line says which key a NIP-05 name or an nprofile stands for. */
function describeKey(check, hex) {
  const help = $("#pubkey-help");
  const npub = api.hexToBech32("npub", hex) || hex;
  help.textContent = check.value === hex || check.value === npub ? KEY_HELP : `${shortHex(check.value, 24, 0)} is ${shortHex(npub, 12, 6)}`;
  help.dataset.pubkey = hex;
}

// ---------------------------------------------------------------- CSV of each panel

/** What a panel shows, as the API's CSV of the same answer (null before it shows anything). */
function panelCsv(key) {
  if (key === "summary") return summary.current ? api.answerCsv({ metrics: summary.current }) : null;
  if (key === "chart") return view?.gran ? api.answerCsv({ rows: chartRows }) : null;
  if (key === "drilldown") return drill.dim ? api.answerCsv({ rows: drill.rows }) : null;
  return null;
}

function csvFilename(key) {
  const w = metas.get(key)?.window || view?.window;
  const who = api.hexToBech32("npub", view?.base.pubkey || "") || "key";
  const what = key === "drilldown" ? `breakdown-${drill.dim}` : key === "chart" ? `over-time-${view?.gran}` : "overview";
  const when = w?.label && w.label !== "custom" ? w.label : `${w?.start}-${w?.end}`;
  return `canal-${what}-${who.slice(0, 16)}-${when}.csv`;
}

function downloadCsv(key) {
  const text = panelCsv(key);
  if (text != null) api.saveBlob(new Blob([text], { type: "text/csv;charset=utf-8" }), csvFilename(key));
}

/** Loads a whole view: summary first (fixes the window), then the rest with the same start/end. */
async function loadView({ confirmed = false } = {}) {
  const check = api.validatePubkey($("#pubkey").value);
  const input = $("#pubkey");
  if (!check.ok) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", "pubkey-help error-banner");
    errors.clear();
    setError("input", check.error);
    input.focus();
    explainInvalidPubkey(input.value, check.error);
    return;
  }
  input.removeAttribute("aria-invalid");
  input.setAttribute("aria-describedby", "pubkey-help");
  clearError("input");

  if (state.customDirty) {
    const { start, end } = readCustomInputs();
    const bad = validateCustom(start, end);
    if (bad) {
      errors.clear();
      setError("input", bad);
      return;
    }
    state.sel = { start, end };
    state.customDirty = false;
    updatePresetButtons();
  }
  let hex = check.hex;
  if (!hex) {
    // A NIP-05 name: the gateway resolves it (once; the panels then ask for the hex key).
    const typed = input.value;
    try {
      hex = await api.resolvePubkey(check);
    } catch (e) {
      if (api.isAbort(e) || input.value !== typed) return;
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", "pubkey-help error-banner");
      errors.clear();
      setError("input", e);
      input.focus();
      return;
    }
    if (input.value !== typed) return;
  }
  describeKey(check, hex);
  state.pubkey = check.value;
  const sel = state.sel;
  // The API gets the hex form (one cache key, one principal check); the link keeps what was typed.
  const base = { pubkey: hex, tz: state.tz };
  const winParams = sel.preset ? { window: sel.preset } : { start: sel.start, end: sel.end };

  viewCtrl?.abort();
  Object.values(panels).forEach((p) => p.supersede());
  const ctrl = new AbortController();
  viewCtrl = ctrl;
  const seq = ++viewSeq;
  errors.clear();
  renderErrors();
  persist();

  // C3: a long custom window is estimated first and runs only when asked.
  const span = sel.preset ? ROLLING[sel.preset] ?? Infinity : sel.end - sel.start;
  const confirmKey = JSON.stringify([state.pubkey, sel.start, sel.end, state.tz]);
  if (!sel.preset && span > ESTIMATE_ABOVE && !confirmed && state.confirmedKey !== confirmKey) {
    const run = () => { state.confirmedKey = confirmKey; hideEstimate(); loadView({ confirmed: true }); };
    showEstimate("Estimating the cost of this window…", run);
    try {
      const est = await api.getEstimate({ ...base, ...winParams }, { signal: ctrl.signal });
      if (seq !== viewSeq) return;
      showEstimate(describeEstimate(est, span), run);
    } catch (e) {
      if (api.isAbort(e) || seq !== viewSeq) return;
      showEstimate(`This window covers ${nf.format(Math.round(span / 86400))} days. The cost could not be estimated (${e.message}); it may run as a background job.`, run);
    }
    return;
  }
  hideEstimate();

  const sp = panels.summary;
  Object.values(panels).forEach((p) => p.root && p.setBusy(true));
  const signal = sp.start(ctrl.signal);
  const newView = (w) => {
    const label = w.label || sel.preset || "custom";
    return {
      seq, tz: state.tz, base,
      window: { start: w.start, end: w.end, label },
      explicit: sel.preset === "all" || label === "all" ? { window: "all" } : { start: w.start, end: w.end },
      asOf: null,
      asOfPending: true,
      drillCache: new Map(),
      gran: null,
    };
  };
  const startPanels = () => {
    for (const k of [...metas.keys()]) if (!["summary", "chart", "drilldown"].includes(k)) metas.delete(k);
    loadPrevious();
    loadChart();
    loadDrilldown();
  };
  // "all" cannot be pinned to an explicit end (custom windows span at most 10 years), so every
  // panel asks for window=all at the same moment: the ends the gateway resolves then agree.
  const together = sel.preset === "all";
  if (together) {
    view = newView(clientWindow(sel));
    startPanels();
  }
  let first;
  try {
    first = await api.getSummary({ ...base, ...winParams }, { signal });
  } catch (e) {
    if (api.isAbort(e)) return;
    setError("summary", e);
    if (!together) Object.values(panels).forEach((p) => p.setBusy(false));
    else sp.setBusy(false);
    return;
  }
  if (seq !== viewSeq) return;
  if (first.kind === "job" && first.job) {
    // A job knows its own window (a reused job may be older than this request): fix that one.
    try {
      const jw = await api.getJobWindow(first.job, { signal });
      if (jw) first.meta.window = jw;
    } catch (e) {
      if (api.isAbort(e)) return;
    }
    if (seq !== viewSeq) return;
  }

  // Fix the window once; every other request uses it.
  const w = first.meta.window ?? clientWindow(sel);
  if (together) {
    view.window = { start: w.start, end: w.end, label: w.label || "all" };
  } else {
    view = newView(w);
  }
  view.asOf = first.meta.freshness?.asOf ?? null;
  view.asOfPending = view.asOf == null && first.kind === "job";
  if (sel.preset) fillCustomInputs(view.window);
  renderWindowLabel();
  persist();
  if (together) refreshStatus();
  else startPanels();

  try {
    const res = first.kind === "job" && first.job ? await followJob(sp, first.job, signal) : first;
    if (!res) return sp.done(signal);
    if (view.seq !== seq) return;
    const rw = res.meta.window;
    if (rw && (rw.start !== view.window.start || rw.end !== view.window.end)) {
      // The window label describes the cards: follow the window the summary was computed for.
      view.window = { start: rw.start, end: rw.end, label: rw.label || view.window.label };
      renderWindowLabel();
    }
    summary.current = res.data.metrics || {};
    summary.view = view;
    renderSummary();
    sp.setMeta(res.meta);
  } catch (e) {
    if (!api.isAbort(e)) setError("summary", e);
  } finally {
    sp.done(signal);
  }
}

async function loadPrevious() {
  const v = view;
  const panel = panels.prev;
  const { start, end } = v.window;
  const prevStart = start - (end - start);
  if (v.window.label === "all" || start === 0 || prevStart < 0) {
    panel.supersede();
    v.prev = null;
    v.prevState = "unavailable";
    v.prevReason = v.window.label === "all" || start === 0 ? "No comparison: this window covers all time." : "No comparison: the previous period would start before 1970.";
    renderSummary();
    return;
  }
  const signal = panel.start(viewCtrl?.signal);
  v.prevState = "loading";
  renderSummary();
  try {
    const params = { ...v.base, start: prevStart, end: start };
    const res = await runForPanel(panel, (s) => api.getSummary(params, { signal: s }), signal, { quiet: true });
    if (!res) {
      v.prevState = "error";
    } else {
      v.prev = res.data.metrics || {};
      v.prevState = "ready";
      panel.setMeta(res.meta);
    }
  } catch (e) {
    if (api.isAbort(e)) {
      if (v.prevState === "loading") v.prevState = "none";
      return;
    }
    v.prevState = "error";
    v.prev = null;
    setError("prev", e);
  } finally {
    renderSummary();
  }
}

// ---------------------------------------------------------------- persistence (localStorage + URL)

function persist() {
  const sel = state.sel;
  const saved = {
    pubkey: state.pubkey || $("#pubkey").value.trim(), tz: state.tz, gran: state.gran, chartMetric: state.chartMetric,
    tab: state.tab, sortMetric: state.sortMetric, ...(sel.preset ? { window: sel.preset } : { start: sel.start, end: sel.end }),
  };
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(saved));
  } catch {
    /* private mode: fine */
  }
  const q = new URLSearchParams();
  if (saved.pubkey) q.set("pubkey", saved.pubkey);
  if (sel.preset) q.set("window", sel.preset);
  else {
    q.set("start", String(sel.start));
    q.set("end", String(sel.end));
  }
  q.set("tz", state.tz);
  const api1 = new URLSearchParams(location.search).get("api");
  if (api1) q.set("api", api1);
  history.replaceState(null, "", `${location.pathname}?${q}`);
}

function restore() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(STORE_KEY) || "{}") || {};
  } catch {
    saved = {};
  }
  const q = new URLSearchParams(location.search);
  const fromUrl = q.has("pubkey") || q.has("window") || q.has("start");
  const src = fromUrl ? Object.fromEntries(q) : saved;
  const zones = new Set(timeZones());
  const tz = q.get("tz") || saved.tz;
  if (tz && zones.has(tz)) state.tz = tz;
  if (saved.gran && (saved.gran === "auto" || GRANULARITIES.includes(saved.gran))) state.gran = saved.gran;
  if (saved.chartMetric && METRICS[saved.chartMetric]) state.chartMetric = saved.chartMetric;
  if (saved.tab && TABS.some((t) => t.dim === saved.tab)) state.tab = saved.tab;
  if (saved.sortMetric && ENGAGEMENT.includes(saved.sortMetric)) state.sortMetric = saved.sortMetric;
  const start = api.toUnix(src.start), end = api.toUnix(src.end);
  if (src.window && (PRESETS.includes(src.window) || src.window in ROLLING)) state.sel = { preset: src.window };
  else if (start != null && end != null && start < end) state.sel = { start, end };
  return src.pubkey || (fromUrl ? saved.pubkey : null) || null;
}

// ---------------------------------------------------------------- controls

function timeZones() {
  let zones = [];
  try {
    zones = Intl.supportedValuesOf("timeZone");
  } catch {
    zones = [];
  }
  const set = new Set(zones);
  set.add("UTC");
  set.add(browserTz());
  return [...set].sort((a, b) => (a === "UTC" ? -1 : b === "UTC" ? 1 : a.localeCompare(b)));
}

function buildControls() {
  for (const btn of document.querySelectorAll('[data-testid="csv-download"]')) {
    btn.addEventListener("click", () => downloadCsv(btn.dataset.panel));
  }
  const presets = $("#presets");
  presets.replaceChildren(...PRESETS.map((p) => h("button", {
    type: "button", class: "seg", "data-window": p, "data-testid": `window-preset-${p}`, "aria-pressed": "false",
    onclick: () => {
      state.sel = { preset: p };
      state.customDirty = false;
      updatePresetButtons();
      loadView();
    },
  }, p === "all" ? "All" : p)));

  const tzSel = $("#tz");
  const local = browserTz();
  tzSel.replaceChildren(...timeZones().map((z) => h("option", { value: z }, z === local ? `${z} (this device)` : z)));
  tzSel.value = state.tz;
  tzSel.addEventListener("change", () => {
    state.tz = tzSel.value;
    if (!state.sel.preset && !state.customDirty) fillCustomInputs(state.sel);
    state.customDirty = false;
    persist();
    if (api.validatePubkey($("#pubkey").value).ok) loadView();
  });

  for (const id of ["#custom-start", "#custom-end"]) {
    const input = $(id);
    input.addEventListener("input", () => { state.customDirty = true; updatePresetButtons(); });
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); loadView(); } });
  }
  $("#custom-apply").addEventListener("click", () => {
    state.customDirty = true;
    loadView();
  });

  $("#pubkey-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadView();
  });
  $("#estimate-dismiss").addEventListener("click", () => {
    hideEstimate();
    viewCtrl?.abort();
  });

  const metricSel = $("#chart-metric");
  metricSel.replaceChildren(...Object.entries(METRICS).map(([k, m]) => h("option", { value: k }, m.label)));
  metricSel.value = state.chartMetric;
  metricSel.addEventListener("change", () => {
    state.chartMetric = metricSel.value;
    persist();
    if (view) renderChart();
  });

  const gran = $("#granularity");
  renderGranularityOptions();
  gran.addEventListener("change", () => {
    state.gran = gran.value;
    persist();
    loadChart();
  });

  const sort = $("#sort-metric");
  sort.replaceChildren(...ENGAGEMENT.map((m) => h("option", { value: m }, METRICS[m].label)));
  sort.value = state.sortMetric;
  sort.addEventListener("change", () => setSortMetric(sort.value));

  $("#drill-more").addEventListener("click", () => loadDrilldown({ append: true }));

  buildTabs();
  buildCards();
  renderSummary();
  updatePresetButtons();
  if (!state.sel.preset) fillCustomInputs(state.sel);
}

// ---------------------------------------------------------------- auth UI (NIP-07) and admin flag

function defaultAuth() {
  if (state.config?.api_key) api.useApiKey(state.config.api_key);
  else api.useApiKey(null);
}

function detectExtension() {
  const btn = $("#nostr-signin");
  const has = !!(window.nostr && typeof window.nostr.signEvent === "function");
  btn.hidden = !has || api.authKind() === "nip98";
  return has;
}

async function signIn() {
  try {
    const hex = await window.nostr.getPublicKey();
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error("bad key");
    api.useNostrExtension(hex);
    $("#pubkey").value = api.hexToBech32("npub", hex) || hex;
    $("#signed-in-label").textContent = `Signed in as ${shortHex(api.hexToBech32("npub", hex) || hex, 10, 4)}`;
    $("#signed-in").hidden = false;
    detectExtension();
    loadView();
  } catch {
    setError("auth", new api.ApiError({ code: "UNAUTHENTICATED", message: "The Nostr extension did not share a public key", hint: "Unlock your extension and allow this site, then try again." }));
  }
}

function signOut() {
  defaultAuth();
  $("#signed-in").hidden = true;
  detectExtension();
}

const flagText = (f) => f.mode === "percent" ? `Canonical: ${f.percent}%` : f.mode === "cohort" ? `Canonical: cohort (${f.cohort.length})` : f.mode === "on" ? "Canonical: on" : "Canonical: off";

async function refreshFlag({ silent = false } = {}) {
  const btn = $("#flag-toggle");
  try {
    const f = await api.getFlag();
    btn.textContent = flagText(f);
    btn.dataset.mode = f.mode;
    clearError("flag");
    return f;
  } catch (e) {
    btn.textContent = "Rollout: unknown";
    btn.title = `${e.message}${e.hint ? ` (${e.hint})` : ""}`;
    if (!silent) setError("flag", e);
    return null;
  }
}

function setupFlag() {
  const btn = $("#flag-toggle");
  const dialog = $("#flag-dialog");
  const form = $("#flag-form");
  btn.hidden = false;
  btn.title = "Show and change which path answers v2 requests";
  refreshFlag({ silent: true });
  const syncFields = () => {
    const mode = form.elements.mode.value;
    $("#flag-percent").disabled = mode !== "percent";
    $("#flag-cohort").disabled = mode !== "cohort";
  };
  form.addEventListener("change", syncFields);
  btn.addEventListener("click", async () => {
    $("#flag-error").textContent = "";
    const f = (await refreshFlag()) || { mode: "off", percent: 0, cohort: [] };
    form.elements.mode.value = f.mode;
    $("#flag-percent").value = String(f.percent);
    $("#flag-cohort").value = f.cohort.join("\n");
    syncFields();
    dialog.showModal();
  });
  $("#flag-cancel").addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const percent = Number($("#flag-percent").value || 0);
    if (!Number.isInteger(percent) || percent < 0 || percent > 100) {
      $("#flag-error").textContent = "Percent must be a whole number from 0 to 100.";
      return;
    }
    const cohort = $("#flag-cohort").value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean)
      .map((s) => api.validatePubkey(s).hex || s);
    const body = { mode: form.elements.mode.value || "off", percent, cohort };
    $("#flag-save").disabled = true;
    try {
      const f = await api.putFlag(body);
      btn.textContent = flagText(f);
      btn.dataset.mode = f.mode;
      dialog.close();
    } catch (err) {
      $("#flag-error").textContent = `${err.message}${err.hint ? `: ${err.hint}` : ""}`;
    } finally {
      $("#flag-save").disabled = false;
    }
  });
}

// ---------------------------------------------------------------- start

async function init() {
  const q = new URLSearchParams(location.search);
  api.setForceLegacy(q.get("api") === "v1");
  const restoredPubkey = restore();
  buildControls();

  const cfg = await api.getConfig();
  state.config = cfg;
  defaultAuth();
  if (cfg.demo) $('[data-testid="demo-label"]').hidden = false;
  if (cfg.version) $("#footer-version").textContent = `canal ${cfg.version}`;
  if (cfg.admin) setupFlag();

  const pk = restoredPubkey || cfg.default_pubkey || "";
  $("#pubkey").value = pk;
  $("#footer-tz").textContent = `All times in ${state.tz}`;

  $("#nostr-signin").addEventListener("click", signIn);
  $("#sign-out").addEventListener("click", signOut);
  // Extensions inject window.nostr shortly after load.
  if (!detectExtension()) [300, 1000, 2500].forEach((ms) => setTimeout(detectExtension, ms));

  setInterval(renderFreshness, 1000);
  if (pk && api.validatePubkey(pk).ok) loadView();
  else if (pk) loadView();
}

panels.summary = new Panel("summary", $("#panel-summary"));
panels.prev = new Panel("prev", null);
panels.chart = new Panel("chart", $("#panel-chart"));
panels.drilldown = new Panel("drilldown", $("#panel-drilldown"));
init();
