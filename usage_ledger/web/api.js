// The JSON API as the dashboard uses it: the Bearer header, exact numbers, and errors a person can act on.

import { parseExact } from "./money.js";

export const BASE = "/api/v1";

/** An answer other than 2xx, or no answer at all; `kind` says which, `message` says it to a person. */
export class ApiError extends Error {
  constructor(kind, message, { status = 0, requestId = null, body = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.kind = kind;  // inference-key | bad-key | rate-limited | invalid | not-found | server | offline | http
    this.status = status;
    this.requestId = requestId;
    this.body = body;
    this.retryAfter = retryAfter;
  }

  get isAuth() {
    return this.kind === "inference-key" || this.kind === "bad-key";
  }
}

export const MESSAGES = {
  "inference-key": "This is an INFERENCE key: it can call models but not read billing. Sign in with an ADMIN key " +
    "(create one under API keys while signed in with an ADMIN key, or with: usage-ledger keys create --user ID --type ADMIN).",
  "bad-key": "This key was not accepted: it is unknown, revoked or expired. Check that you pasted the whole key.",
  offline: `Cannot reach the usage-ledger server at ${location.origin}. Check that it is running and try again.`,
};

function fieldErrors(body) {
  const details = body && body.details;
  if (!details || typeof details !== "object") return [];
  const out = [...(details._errors || [])];
  for (const [field, value] of Object.entries(details)) {
    if (field !== "_errors" && value && Array.isArray(value._errors)) out.push(...value._errors);
  }
  return out;
}

async function errorOf(response) {
  const requestId = response.headers.get("x-request-id");
  let body = null;
  try {
    body = parseExact(await response.text());
  } catch {
    body = null;
  }
  const said = body && typeof body.error === "string" ? body.error : "";
  const status = response.status;
  const extra = { status, requestId, body };
  if (status === 401) {
    return said === "Admin API key required"
      ? new ApiError("inference-key", MESSAGES["inference-key"], extra)
      : new ApiError("bad-key", MESSAGES["bad-key"], extra);
  }
  if (status === 429) {
    const retryAfter = Number(response.headers.get("retry-after")) || null;
    const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again shortly.";
    return new ApiError("rate-limited", (said || "Too many requests.").replace(/\.?$/, ".") + wait,
                        { ...extra, retryAfter });
  }
  if (status === 400) {
    const reasons = fieldErrors(body);
    return new ApiError("invalid", reasons.length ? reasons.join("; ") : said || "Invalid request.", extra);
  }
  if (status === 404) return new ApiError("not-found", said || "Not found.", extra);
  const ref = requestId ? ` (request id ${requestId})` : "";
  if (status === 502 || status === 503 || status === 504) {
    return new ApiError("offline", `The server is unavailable right now (HTTP ${status})${ref}. Try again shortly.`,
                        extra);
  }
  if (status >= 500) {
    return new ApiError("server", `The server could not answer (HTTP ${status})${ref}. Try again; if it keeps ` +
                        "failing, give the request id to whoever runs usage-ledger.", extra);
  }
  return new ApiError("http", said || `Unexpected answer (HTTP ${status})${ref}.`, extra);
}

/** Query parameters without the empty ones, in the order given (so a URL is the same for the same filters). */
export function query(params = {}) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.append(name, String(value));
  }
  return search.toString();
}

export class Client {
  /** @param {string} key an API key's secret; it lives in this object and in sessionStorage, nowhere else. */
  constructor(key) {
    this.key = key;
  }

  /** The raw Response of a 2xx answer; an ApiError otherwise. */
  async fetch(path, { method = "GET", params, body, accept = "application/json", signal } = {}) {
    const qs = query(params);
    const headers = { Authorization: `Bearer ${this.key}`, Accept: accept };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(`${BASE}${path}${qs ? "?" + qs : ""}`, {
        method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
        // Never a browser cache: another key may have asked the same URL in this browser.
        cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer", redirect: "error",
      });
    } catch (error) {
      if (error && error.name === "AbortError") throw error;
      throw new ApiError("offline", MESSAGES.offline);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async json(path, options) {
    const response = await this.fetch(path, options);
    try {
      return parseExact(await response.text());
    } catch (error) {
      if (error && error.name === "AbortError") throw error;
      throw new ApiError("server", "The server's answer could not be read (it is not JSON).",
                         { status: response.status, requestId: response.headers.get("x-request-id") });
    }
  }

  balance(options) { return this.json("/billing/balance", options); }
  analytics(params, options) { return this.json("/billing/usage-analytics", { ...options, params }); }
  usage(params, options) { return this.json("/billing/usage", { ...options, params }); }
  usageCsv(params, options) { return this.fetch("/billing/usage", { ...options, params, accept: "text/csv" }); }
  keys(options) { return this.json("/api_keys", options); }
  createKey(body) { return this.json("/api_keys", { method: "POST", body }); }
  revokeKey(id) { return this.json("/api_keys", { method: "DELETE", params: { id } }); }
}

/** The file name of a Content-Disposition header (filename*=UTF-8'' first, then filename=). */
export function filenameOf(disposition, fallback) {
  if (!disposition) return fallback;
  const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(disposition);
  if (star) {
    try {
      return sanitize(decodeURIComponent(star[1].trim())) || fallback;
    } catch { /* fall through */ }
  }
  const plain = /filename\s*=\s*("((?:[^"\\]|\\.)*)"|[^;]+)/.exec(disposition);
  if (!plain) return fallback;
  const name = plain[2] !== undefined ? plain[2].replace(/\\(.)/g, "$1") : plain[1].trim();
  return sanitize(name) || fallback;
}

function sanitize(name) {
  return name.replace(/[\\/:*?"<>|\u0000-\u001f]/g, "_").trim();
}
