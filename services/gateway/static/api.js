// canal dashboard: the C1 client adapter.
//
// The one module that talks to the gateway. It reads the canonical v2 envelope
// and the legacy v1 envelope into the same shape, attaches auth (API key or
// NIP-98 via a NIP-07 extension), turns every failure into an ApiError that
// carries the API's hint, and runs async jobs (202 -> poll -> result).
// Nothing here touches the DOM.

export const API_V2 = "/api/v2";
export const API_V1 = "/api/v1";

/** Human names of the job phases the query service reports. */
export const JOB_PHASES = {
  queued: "Queued",
  planning: "Planning",
  reading_aggregates: "Reading aggregates",
  scanning_facts: "Scanning raw facts",
  combining: "Combining",
  storing: "Storing result",
};

/** An error a person can act on: code, message, hint (from the API when it sent one). */
export class ApiError extends Error {
  constructor({ status = 0, code = "ERROR", message = "Request failed", hint = "", requestId = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.hint = hint;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

export const isAbort = (e) => e && (e.name === "AbortError" || e.code === "ABORTED");

// ---------------------------------------------------------------- auth

let auth = { kind: "none" };

/** Use an API key: `Authorization: Bearer <key>`. */
export function useApiKey(key) {
  auth = key ? { kind: "bearer", key } : { kind: "none" };
}

/** Use NIP-98 with the NIP-07 extension at window.nostr (one signed event per request). */
export function useNostrExtension(pubkey) {
  auth = { kind: "nip98", pubkey };
}

export function authKind() {
  return auth.kind;
}

/** Base64 of a string's UTF-8 bytes. */
function base64Utf8(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The NIP-98 kind 27235 event for one request, signed by the extension. */
async function nip98Header(absoluteUrl, method, body) {
  if (!window.nostr || typeof window.nostr.signEvent !== "function") {
    throw new ApiError({ code: "UNAUTHENTICATED", message: "The Nostr extension is not available", hint: "Enable your NIP-07 extension and sign in again." });
  }
  const tags = [["u", absoluteUrl], ["method", method]];
  if (body != null && globalThis.crypto && crypto.subtle) tags.push(["payload", await sha256Hex(body)]);
  const unsigned = { kind: 27235, created_at: Math.floor(Date.now() / 1000), tags, content: "" };
  let signed;
  try {
    signed = await window.nostr.signEvent(unsigned);
  } catch (e) {
    throw new ApiError({ code: "UNAUTHENTICATED", message: "The Nostr extension did not sign the request", hint: "Approve the signing request in your extension, or use an API key." });
  }
  return "Nostr " + base64Utf8(JSON.stringify(signed));
}

async function authorization(absoluteUrl, method, body) {
  if (auth.kind === "bearer") return `Bearer ${auth.key}`;
  if (auth.kind === "nip98") return nip98Header(absoluteUrl, method, body);
  return null;
}

// ---------------------------------------------------------------- helpers

/** Unix seconds from a number, a digit string or an RFC 3339 string; null when absent. */
export function toUnix(v) {
  if (v == null || v === "") return null;
  if (typeof v === "number") return Number.isFinite(v) ? Math.floor(v) : null;
  const s = String(v).trim();
  if (/^-?\d+$/.test(s)) return parseInt(s, 10);
  const ms = Date.parse(s);
  return Number.isNaN(ms) ? null : Math.floor(ms / 1000);
}

function toInt(v, dflt = 0) {
  const n = typeof v === "number" ? v : Number(v);
  return Number.isFinite(n) ? n : dflt;
}

/** An absolute URL on this origin from a path (with optional query params). */
export function buildUrl(pathOrUrl, params) {
  const url = new URL(pathOrUrl, window.location.origin);
  if (params) {
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === "") continue;
      url.searchParams.set(k, String(v));
    }
  }
  return url;
}

/** Adds or replaces one query parameter on a URL string. */
export function withParam(urlString, key, value) {
  const url = new URL(urlString, window.location.origin);
  url.searchParams.set(key, value);
  return url.origin === window.location.origin ? url.pathname + url.search : url.toString();
}

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new DOMException("Aborted", "AbortError"));
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); reject(new DOMException("Aborted", "AbortError")); }, { once: true });
  });

// ---------------------------------------------------------------- envelope

function normalizeRelays(list) {
  if (!Array.isArray(list)) return [];
  return list
    .filter((r) => r && typeof r === "object")
    .map((r) => ({
      url: String(r.url ?? r.relay ?? "unknown relay"),
      lagSeconds: r.lag_seconds == null ? null : toInt(r.lag_seconds, null),
      healthy: r.healthy !== false,
    }));
}

function normalizeFreshness(f, serverSkew) {
  if (!f || typeof f !== "object") return null;
  // 0 means "nothing read yet" (the placeholder meta of a 202 job answer): unknown, not 1970.
  const positive = (v) => { const n = toUnix(v); return n != null && n > 0 ? n : null; };
  const asOf = positive(f.as_of);
  return {
    asOf,
    watermark: positive(f.watermark),
    lagSeconds: f.lag_seconds == null ? null : toInt(f.lag_seconds, null),
    stale: f.stale === true,
    relays: normalizeRelays(f.relays),
    // Seconds to add to the local clock to get the server's (from the Date header).
    serverSkew,
    receivedAt: Date.now(),
  };
}

function normalizeReasons(list) {
  if (!Array.isArray(list)) return [];
  return list
    .map((r) => (typeof r === "string" ? { code: r, detail: null } : r && typeof r === "object" ? { code: String(r.code ?? r.reason ?? "unknown"), detail: r.detail ?? r.message ?? null } : null))
    .filter(Boolean);
}

/**
 * One shape for both paths: {status, kind: "result"|"job", data, job, meta}.
 * Missing meta fields (common on the legacy path) become null/false, never a crash.
 */
export function normalizeEnvelope(json, { status = 200, legacyPath = false, serverSkew = 0 } = {}) {
  const isObj = json && typeof json === "object" && !Array.isArray(json);
  const hasEnvelope = isObj && ("data" in json || "meta" in json);
  const data = hasEnvelope ? json.data ?? {} : isObj ? json : { value: json };
  const m = (hasEnvelope && json.meta && typeof json.meta === "object" && json.meta) || {};
  const w = m.window && typeof m.window === "object" ? m.window : null;
  const freshness = normalizeFreshness(m.freshness, serverSkew);
  const cache = typeof m.cache === "string" ? m.cache : null;
  const job = data && typeof data === "object" && data.job && typeof data.job === "object" ? data.job : null;
  return {
    status,
    kind: status === 202 || job ? "job" : "result",
    data,
    job,
    meta: {
      requestId: m.request_id ?? null,
      source: m.source === "canonical" || m.source === "legacy" ? m.source : legacyPath ? "legacy" : "unknown",
      window: w && toUnix(w.start) != null && toUnix(w.end) > 0 ? { start: toUnix(w.start), end: toUnix(w.end), label: w.label ?? null } : null,
      freshness,
      // A fallback answer (last good result), as opposed to live data that is merely lagging.
      fallback: m.stale === true || cache === "stale",
      stale: m.stale === true || cache === "stale" || (freshness?.stale ?? false),
      partial: m.partial === true,
      partialReasons: normalizeReasons(m.partial_reasons),
      plan: m.plan && typeof m.plan === "object" ? m.plan : null,
      cache,
    },
  };
}

async function errorFrom(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  const e = body && body.error && typeof body.error === "object" ? body.error : null;
  const retryAfter = res.headers.get("Retry-After");
  let hint = e?.hint || "";
  if (!hint) {
    if (res.status === 401) hint = "Sign in with your Nostr extension or use an API key.";
    else if (res.status === 403) hint = "This key or signer may not read this pubkey.";
    else if (res.status === 429) hint = "Too many requests: wait a moment and try again.";
    else if (res.status >= 500) hint = "The service had a problem. Try again in a moment.";
  }
  if (res.status === 429 && retryAfter) hint = `${hint} (retry after ${retryAfter} s)`.trim();
  return new ApiError({
    status: res.status,
    code: e?.code || `HTTP_${res.status}`,
    message: e?.message || res.statusText || `HTTP ${res.status}`,
    hint,
    requestId: e?.request_id ?? null,
    retryAfter,
  });
}

/** One HTTP call with auth. Returns the raw Response (ok or not), throws on network failure. */
async function send(method, pathOrUrl, { params, body, signal } = {}) {
  const url = buildUrl(pathOrUrl, params);
  const bodyText = body === undefined ? undefined : JSON.stringify(body);
  const headers = { Accept: "application/json" };
  if (bodyText !== undefined) headers["Content-Type"] = "application/json";
  const a = await authorization(url.toString(), method, bodyText ?? null);
  if (a) headers.Authorization = a;
  try {
    return await fetch(url, { method, headers, body: bodyText, signal, credentials: "same-origin", cache: "no-store" });
  } catch (e) {
    if (isAbort(e)) throw e;
    throw new ApiError({ code: "NETWORK", message: "Could not reach the server", hint: "Check your connection; the page will keep the last data shown." });
  }
}

function skewFrom(res) {
  const d = res.headers.get("Date");
  const ms = d ? Date.parse(d) : NaN;
  // Whole-second Date header: ignore skews under 2 s.
  if (Number.isNaN(ms)) return 0;
  const skew = (ms - Date.now()) / 1000;
  return Math.abs(skew) < 2 ? 0 : skew;
}

/** GET/PUT/... that returns the normalized envelope or throws ApiError. */
export async function call(method, pathOrUrl, opts = {}) {
  const res = await send(method, pathOrUrl, opts);
  if (!res.ok) throw await errorFrom(res);
  if (res.status === 204) return normalizeEnvelope({}, { status: 204 });
  let json;
  try {
    json = await res.json();
  } catch (e) {
    if (isAbort(e)) throw e;
    throw new ApiError({ status: res.status, code: "BAD_RESPONSE", message: "The server sent an answer the page cannot read", hint: "Try again; if it persists, report the request id." });
  }
  const legacyPath = new URL(res.url || buildUrl(pathOrUrl).toString()).pathname.startsWith(API_V1);
  return normalizeEnvelope(json, { status: res.status, legacyPath, serverSkew: skewFrom(res) });
}

// ---------------------------------------------------------------- analytics

let forceLegacy = false;
/** Debug aid (?api=v1): read the legacy path directly. */
export function setForceLegacy(on) {
  forceLegacy = !!on;
}

/**
 * Summary or drilldown on v2; if v2 is not deployed (404 without an error
 * envelope) the same request goes to v1.
 */
async function analytics(name, params, opts) {
  if (!forceLegacy) {
    try {
      return await call("GET", `${API_V2}/analytics/${name}`, { ...opts, params });
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 404 || !e.code.startsWith("HTTP_")) throw e;
    }
  }
  return call("GET", `${API_V1}/analytics/${name}`, { ...opts, params });
}

export const getSummary = (params, opts) => analytics("summary", params, opts);
export const getDrilldown = (params, opts) => analytics("drilldown", params, opts);

/** Cost estimate for the same params: {cost, sync_limit, async, plan}. */
export async function getEstimate(params, opts) {
  const r = await call("GET", `${API_V2}/analytics/estimate`, { ...opts, params });
  const d = r.data || {};
  return { cost: d.cost ?? null, syncLimit: d.sync_limit ?? null, async: d.async === true, plan: d.plan ?? null };
}

// ---------------------------------------------------------------- jobs

function jobStatusUrl(job) {
  return job.status_url || `${API_V2}/analytics/jobs/${encodeURIComponent(job.id)}`;
}

export function jobResultUrl(job, status) {
  return status?.result_url || job.result_url || `${API_V2}/analytics/jobs/${encodeURIComponent(job.id)}/result`;
}

/** Current job status: {id, state, phase, progress, created_at, updated_at, result_url, error}. */
export async function getJob(job, opts) {
  const r = await call("GET", jobStatusUrl(job), opts);
  const d = r.data && r.data.job && !r.data.state ? r.data.job : r.data;
  return { ...d, progress: Math.max(0, Math.min(1, toInt(d?.progress, 0))) };
}

/**
 * The window a job computes, from its status answer's meta. It can be older than the request
 * that got the job: the gateway hands a repeated heavy request the job it already made.
 */
export async function getJobWindow(job, opts) {
  const r = await call("GET", jobStatusUrl(job), opts);
  return r.meta.window;
}

/** Cancel a job (DELETE); never throws. */
export async function cancelJob(job) {
  try {
    const res = await send("DELETE", `${API_V2}/analytics/jobs/${encodeURIComponent(job.id)}`);
    return res.ok;
  } catch {
    return false;
  }
}

/**
 * Polls a job every `interval` ms until it ends; resolves with the result
 * envelope (same shape as the sync answer) plus `resultUrl`.
 * onUpdate(status) is called after every poll.
 */
export async function waitForJob(job, { signal, onUpdate, interval = 500 } = {}) {
  for (;;) {
    const st = await getJob(job, { signal });
    onUpdate?.(st);
    if (st.state === "succeeded") {
      const resultUrl = jobResultUrl(job, st);
      const res = await call("GET", resultUrl, { signal });
      res.resultUrl = resultUrl;
      return res;
    }
    if (st.state === "failed") {
      const e = st.error || {};
      throw new ApiError({ code: e.code || "JOB_FAILED", message: e.message || "The background job failed", hint: e.hint || "Try a shorter window or try again later." });
    }
    if (st.state === "cancelled") {
      throw new ApiError({ code: "JOB_CANCELLED", message: "The background job was cancelled", hint: "Load again to start a new one." });
    }
    await sleep(interval, signal);
  }
}

/** Downloads an authenticated URL as a file (links alone would not carry the Authorization header). */
export async function download(url, filename) {
  const res = await send("GET", url);
  if (!res.ok) throw await errorFrom(res);
  saveBlob(await res.blob(), filename);
}

/** Hands a blob to the browser as a download named `filename`. */
export function saveBlob(blob, filename) {
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

/**
 * CSV of answer rows, as the API's CSV of a job result: the rows' own fields, then one column per
 * metric; a summary's metrics as metric,value lines. Text that a spreadsheet would run as a formula
 * (display names are user content) is quoted with a leading apostrophe.
 */
export function answerCsv(data) {
  const cell = (v) => {
    let t = v == null ? "" : typeof v === "boolean" ? String(v) : String(v);
    if (typeof v === "string" && /^[=+\-@\t\r]/.test(t)) t = "'" + t;
    return /[",\n\r]/.test(t) ? `"${t.replaceAll('"', '""')}"` : t;
  };
  const lines = [];
  if (Array.isArray(data.rows)) {
    const rows = data.rows;
    const fields = Object.keys(rows[0] || {}).filter((k) => k !== "metrics");
    const metrics = [];
    for (const r of rows) for (const m of Object.keys(r.metrics || {})) if (!metrics.includes(m)) metrics.push(m);
    lines.push([...fields, ...metrics].map(cell).join(","));
    for (const r of rows) lines.push([...fields.map((f) => cell(r[f])), ...metrics.map((m) => cell(r.metrics?.[m] ?? 0))].join(","));
  } else {
    lines.push("metric,value");
    for (const [name, value] of Object.entries(data.metrics || {})) lines.push(`${cell(name)},${cell(value)}`);
  }
  return lines.join("\n") + "\n";
}

// ---------------------------------------------------------------- config & admin

/** /ui/config.json, with safe defaults when it is missing. */
export async function getConfig() {
  const dflt = { demo: false, api_key: null, default_pubkey: null, admin: false, version: "" };
  try {
    const res = await fetch("/ui/config.json", { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!res.ok) return dflt;
    return { ...dflt, ...(await res.json()) };
  } catch {
    return dflt;
  }
}

function normalizeFlag(d) {
  const f = d && d.flag && typeof d.flag === "object" ? d.flag : d || {};
  return {
    mode: ["off", "cohort", "percent", "on"].includes(f.mode) ? f.mode : "off",
    percent: Math.max(0, Math.min(100, toInt(f.percent, 0))),
    cohort: Array.isArray(f.cohort) ? f.cohort.map(String) : [],
  };
}

export async function getFlag(opts) {
  return normalizeFlag((await call("GET", `${API_V2}/admin/flag`, opts)).data);
}

export async function putFlag(flag, opts) {
  return normalizeFlag((await call("PUT", `${API_V2}/admin/flag`, { ...opts, body: flag })).data);
}

// ---------------------------------------------------------------- NIP-19 (npub) without dependencies

const BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const GEN = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values) {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= GEN[i];
  }
  return chk >>> 0;
}
const hrpExpand = (hrp) => [...[...hrp].map((c) => c.charCodeAt(0) >> 5), 0, ...[...hrp].map((c) => c.charCodeAt(0) & 31)];

function convertBits(data, from, to, pad) {
  let acc = 0, bits = 0;
  const out = [], maxv = (1 << to) - 1;
  for (const v of data) {
    acc = (acc << from) | v;
    bits += from;
    while (bits >= to) { bits -= to; out.push((acc >> bits) & maxv); }
  }
  if (pad) { if (bits) out.push((acc << (to - bits)) & maxv); }
  else if (bits >= from || ((acc << (to - bits)) & maxv)) return null;
  return out;
}

/** The payload bytes of a valid bech32 string with prefix `hrp` (no 90-character limit: NIP-19), else null. */
function bech32Bytes(s, hrp) {
  if (typeof s !== "string" || !s.startsWith(hrp + "1")) return null;
  const words = [...s.slice(hrp.length + 1)].map((c) => BECH32.indexOf(c));
  if (words.some((w) => w < 0) || words.length < 7) return null;
  if (polymod([...hrpExpand(hrp), ...words]) !== 1) return null;
  return convertBits(words.slice(0, -6), 5, 8, false);
}

const toHex = (bytes) => bytes.map((b) => b.toString(16).padStart(2, "0")).join("");

/** Hex of a valid bech32 `npub1…` (32 bytes), else null. */
export function npubToHex(s) {
  const bytes = bech32Bytes(s, "npub");
  return bytes && bytes.length === 32 ? toHex(bytes) : null;
}

/** The pubkey (hex) of a valid `nprofile1…` (NIP-19 TLV: type 0 is the 32-byte key), else null. */
export function nprofileToHex(s) {
  const bytes = bech32Bytes(s, "nprofile");
  if (!bytes) return null;
  for (let i = 0; i + 2 <= bytes.length;) {
    const [type, len] = [bytes[i], bytes[i + 1]];
    if (i + 2 + len > bytes.length) return null;
    if (type === 0 && len === 32) return toHex(bytes.slice(i + 2, i + 34));
    i += 2 + len;
  }
  return null;
}

/** `name@domain` (NIP-05; the gateway resolves it). */
export const isNip05 = (s) => /^[a-z0-9._-]+@[a-z0-9.-]+(:[0-9]{1,5})?$/i.test(String(s ?? "").trim());

/** bech32 encoding of 32-byte hex under `hrp` (npub, note). */
export function hexToBech32(hrp, hex) {
  if (!/^[0-9a-f]{64}$/.test(hex)) return null;
  const bytes = hex.match(/../g).map((h) => parseInt(h, 16));
  const words = convertBits(bytes, 8, 5, true);
  const mod = polymod([...hrpExpand(hrp), ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  const chk = [0, 1, 2, 3, 4, 5].map((i) => (mod >>> (5 * (5 - i))) & 31);
  return hrp + "1" + [...words, ...chk].map((w) => BECH32[w]).join("");
}

/**
 * Client-side pubkey check mirroring the API's INVALID_PUBKEY rule.
 * Returns {ok, value, hex} or {ok: false, error: ApiError}. A NIP-05 name@domain is
 * {ok, value, hex: null, nip05: true}: only the gateway can resolve it (`resolvePubkey`).
 */
export function validatePubkey(raw) {
  const s = String(raw ?? "").trim().replace(/^nostr:/, "");
  if (/^[0-9a-f]{64}$/.test(s)) return { ok: true, value: s, hex: s };
  if (s.startsWith("npub1")) {
    const hex = npubToHex(s);
    if (hex) return { ok: true, value: s, hex };
  }
  if (s.startsWith("nprofile1")) {
    const hex = nprofileToHex(s);
    if (hex) return { ok: true, value: s, hex };
  }
  if (isNip05(s)) return { ok: true, value: s, hex: null, nip05: true };
  let hint = "Enter 64 lowercase hex characters, an npub1… or nprofile1… key, or a NIP-05 name@domain.";
  if (!s) hint = "Enter a public key: 64 lowercase hex characters, an npub1… or nprofile1… key, or a NIP-05 name@domain.";
  else if (/^[0-9a-fA-F]{64}$/.test(s)) hint = "Hex public keys must be lowercase.";
  else if (/^[0-9a-f]+$/i.test(s)) hint = `A hex public key has 64 characters; this one has ${s.length}.`;
  else if (/^(npub|nprofile)1/.test(s)) hint = `This ${s.slice(0, s.indexOf("1"))} has a typo (its checksum does not match). Copy it again.`;
  else if (/^(nsec|note|nevent|naddr)1/.test(s)) hint = `That is a ${s.slice(0, s.indexOf("1"))}, not a public key. Paste an npub1…, nprofile1…, 64-hex key or NIP-05 name.`;
  return { ok: false, error: new ApiError({ status: 400, code: "INVALID_PUBKEY", message: "That is not a valid public key", hint }) };
}

/**
 * The hex key of a checked input: offline for hex/npub/nprofile; a NIP-05 name is resolved by the
 * gateway (the smallest summary answer carries the key it resolved to). Throws the API's error.
 */
export async function resolvePubkey(check, opts) {
  if (check.hex) return check.hex;
  const r = await getSummary({ pubkey: check.value, window: "1h", metrics: "notes.count" }, opts);
  return /^[0-9a-f]{64}$/.test(r.data?.pubkey ?? "") ? r.data.pubkey : check.value;  // (a job: let each call resolve it)
}
