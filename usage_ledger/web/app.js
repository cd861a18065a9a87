// The dashboard: sign in with an ADMIN key, then balances, spend charts, usage records and API keys.
// Plain ES modules, no framework, no build step. Every figure comes from the JSON API under /api/v1.

import { ApiError, Client, filenameOf, query } from "./api.js";
import * as money from "./money.js";
import * as charts from "./charts.js";

const KEY_STORAGE = "usage-ledger.adminKey";     // sessionStorage only: gone with the tab
const PREFS_STORAGE = "usage-ledger.prefs";      // period, zone, split: no secret in here
const MAX_RANGE_DAYS = 90;

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

const state = {
  client: null,
  period: "7d",
  rangeStart: "",
  rangeEnd: "",
  timezone: "UTC",
  split: "currency",
  analytics: null,
  usage: { page: 1, limit: 50, sortOrder: "desc", currency: "", startDate: "", endDate: "", total: 0, totalPages: 0 },
  keys: [],
  generation: { balance: 0, analytics: 0, usage: 0, keys: 0 },
  aborts: {},
};

// -- small DOM helpers ---------------------------------------------------------------------------------------

/** h("td", {class: "num", title: "…"}, "text", childNode): text is always text (descriptions are user input). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function moneyCell(value, kind = "usd") {
  const nano = money.toNano(value);
  const text = kind === "diem" ? money.diem(nano, "") : money.usd(nano);
  return h("td", { class: "num" + (nano === 0n ? " zero" : ""), title: money.exact(nano) }, text);
}

const INTEGER = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const COMPACT = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const UNIT_NAMES = { tokens: "tokens", images: "images", chars: "chars", seconds: "s", generations: "generations" };

function unitsText(value, unitType, compactFrom = 1e6) {
  const n = money.num(value);
  const figure = Math.abs(n) >= compactFrom ? COMPACT.format(n) : INTEGER.format(n);
  const name = unitType === null || unitType === undefined ? "units" : UNIT_NAMES[unitType] || unitType;
  return `${figure} ${name}`;
}

// -- time zones and days ---------------------------------------------------------------------------------------

const partsFormatters = new Map();

function partsIn(zone, ms) {
  let f = partsFormatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", { timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit",
                                           day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
    partsFormatters.set(zone, f);
  }
  const out = {};
  for (const part of f.formatToParts(new Date(ms))) out[part.type] = part.value;
  return { year: +out.year, month: +out.month, day: +out.day, hour: +out.hour % 24, minute: +out.minute,
           second: +out.second };
}

function offsetMs(zone, ms) {
  const p = partsIn(zone, ms);
  return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - Math.floor(ms / 1000) * 1000;
}

/** The UTC instant of local midnight starting `date` (YYYY-MM-DD) in `zone`. */
function midnightIn(date, zone) {
  const [y, m, d] = date.split("-").map(Number);
  const wall = Date.UTC(y, m - 1, d);
  let t = wall - offsetMs(zone, wall);
  t = wall - offsetMs(zone, t);  // a second pass lands on the right side of a DST change
  return t;
}

function addDays(date, n) {
  const [y, m, d] = date.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
}

function todayIn(zone) {
  const p = partsIn(zone, Date.now());
  return `${p.year}-${String(p.month).padStart(2, "0")}-${String(p.day).padStart(2, "0")}`;
}

function daysBetween(first, last) {
  return Math.round((Date.parse(last + "T00:00:00Z") - Date.parse(first + "T00:00:00Z")) / 86_400_000) + 1;
}

const pad = (n) => String(n).padStart(2, "0");

/** "2026-11-25 17:50:10" in the chosen zone. */
function localTime(iso, zone = state.timezone) {
  const p = partsIn(zone, Date.parse(iso));
  return `${p.year}-${pad(p.month)}-${pad(p.day)} ${pad(p.hour)}:${pad(p.minute)}:${pad(p.second)}`;
}

const DAY_LABEL = new Intl.DateTimeFormat("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
const DAY_LONG = new Intl.DateTimeFormat("en-US", { year: "numeric", month: "short", day: "numeric", timeZone: "UTC" });
const dayLabel = (date) => DAY_LABEL.format(new Date(date + "T00:00:00Z"));
const dayLong = (date) => DAY_LONG.format(new Date(date + "T00:00:00Z"));

// Browsers (ICU) still list some zones by their pre-rename names; people look for the current ones. The server's
// zone database knows both.
const RENAMED = {
  "Asia/Calcutta": "Asia/Kolkata", "Asia/Katmandu": "Asia/Kathmandu", "Asia/Saigon": "Asia/Ho_Chi_Minh",
  "Asia/Rangoon": "Asia/Yangon", "Europe/Kiev": "Europe/Kyiv", "America/Godthab": "America/Nuuk",
  "Atlantic/Faeroe": "Atlantic/Faroe", "Pacific/Truk": "Pacific/Chuuk", "Pacific/Ponape": "Pacific/Pohnpei",
  "Pacific/Enderbury": "Pacific/Kanton", "America/Buenos_Aires": "America/Argentina/Buenos_Aires",
};
const modernZone = (zone) => RENAMED[zone] || zone;

function browserZone() {
  try {
    const zone = modernZone(Intl.DateTimeFormat().resolvedOptions().timeZone);
    return zone && zone !== "Etc/Unknown" ? zone : "UTC";
  } catch {
    return "UTC";
  }
}

function fillZones(select, chosen) {
  let zones = [];
  try {
    zones = Intl.supportedValuesOf("timeZone");
  } catch {
    zones = [];
  }
  const names = new Set(["UTC", ...zones.map(modernZone)]);
  names.add(chosen);
  const longOffset = (zone) => {
    try {
      const name = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "longOffset" })
        .formatToParts(new Date()).find((p) => p.type === "timeZoneName");
      return name ? name.value.replace("GMT", "UTC") : "";
    } catch {
      return "";
    }
  };
  const groups = new Map();
  for (const zone of names) {
    const region = zone.includes("/") ? zone.split("/")[0] : "";
    if (!groups.has(region)) groups.set(region, []);
    groups.get(region).push(zone);
  }
  select.replaceChildren();
  for (const region of [...groups.keys()].sort()) {
    const options = groups.get(region).sort().map((zone) => {
      const offset = longOffset(zone);
      const label = zone.replaceAll("_", " ") + (offset && zone !== "UTC" ? ` (${offset})` : "");
      return h("option", { value: zone, selected: zone === chosen }, label);
    });
    if (region) select.append(h("optgroup", { label: region }, options));
    else select.append(...options);
  }
  select.value = chosen;
}

// -- storage -----------------------------------------------------------------------------------------------------

function storage() {
  try {
    return window.sessionStorage;
  } catch {
    return null;  // storage disabled: the key lives in memory for this page only
  }
}

function savePrefs() {
  const { period, rangeStart, rangeEnd, timezone, split } = state;
  try {
    storage()?.setItem(PREFS_STORAGE, JSON.stringify({ period, rangeStart, rangeEnd, timezone, split }));
  } catch { /* full or disabled: preferences are a convenience */ }
}

function loadPrefs() {
  try {
    const prefs = JSON.parse(storage()?.getItem(PREFS_STORAGE) || "{}");
    if (["7d", "30d", "90d", "custom"].includes(prefs.period)) state.period = prefs.period;
    if (/^\d{4}-\d{2}-\d{2}$/.test(prefs.rangeStart || "")) state.rangeStart = prefs.rangeStart;
    if (/^\d{4}-\d{2}-\d{2}$/.test(prefs.rangeEnd || "")) state.rangeEnd = prefs.rangeEnd;
    if (typeof prefs.timezone === "string" && prefs.timezone) state.timezone = prefs.timezone;
    if (["currency", "model", "key"].includes(prefs.split)) state.split = prefs.split;
  } catch { /* ignore a damaged entry */ }
}

// -- section states: loading, ready, empty, error ---------------------------------------------------------------

/**
 * Sets a section's data-state and its status line. `action` is an optional {label, run} button (Retry, Clear ...).
 */
function setState(section, kind, message = "", action = null) {
  section.dataset.state = kind;
  section.setAttribute("aria-busy", kind === "loading" ? "true" : "false");
  const status = $("[data-status]", section);
  if (!status) return;
  status.className = `status status-${kind}`;
  if (kind === "ready") {
    status.hidden = true;
    status.replaceChildren();
    return;
  }
  status.hidden = false;
  const icon = { loading: h("span", { class: "spinner", "aria-hidden": "true" }),
                 empty: h("span", { class: "status-icon", "aria-hidden": "true" }, "∅"),
                 error: h("span", { class: "status-icon", "aria-hidden": "true" }, "!") }[kind];
  const children = [icon, h("span", { class: "status-text" }, message)];
  if (action) children.push(h("button", { type: "button", class: "btn btn-small", onclick: action.run }, action.label));
  status.replaceChildren(...children);
  status.setAttribute("role", kind === "error" ? "alert" : "status");
}

function failed(section, error, retry) {
  if (error && error.name === "AbortError") return;
  if (error instanceof ApiError && error.isAuth) {
    signOut(`Signed out: ${error.message}`);
    return;
  }
  const message = error instanceof ApiError ? error.message : `Something went wrong: ${error && error.message}`;
  setState(section, "error", message, { label: "Retry", run: retry });
  if (error instanceof ApiError && error.kind === "offline") showBanner(error.message);
}

function showBanner(message) {
  $("#banner-text").textContent = message;
  $("#banner").hidden = false;
}

function hideBanner() {
  $("#banner").hidden = true;
}

function begin(name) {
  state.aborts[name]?.abort();
  const controller = new AbortController();
  state.aborts[name] = controller;
  const generation = ++state.generation[name];
  return { signal: controller.signal, current: () => state.generation[name] === generation && !!state.client };
}

// -- sign in and out ---------------------------------------------------------------------------------------------

function showView(view) {
  document.body.dataset.view = view;
  $("#signin").hidden = view !== "signin";
  $("#dashboard").hidden = view !== "dashboard";
  $("#session").hidden = view !== "dashboard";
}

function signInMessage(text, kind = "error") {
  const box = $("#signin-error");
  box.className = `alert alert-${kind}`;
  box.textContent = text || "";
  box.hidden = !text;
  box.dataset.error = "";
}

async function signIn(event) {
  event.preventDefault();
  const input = $("#key-input");
  const key = input.value.trim();
  if (!key) {
    signInMessage("Paste an ADMIN API key first.");
    input.focus();
    return;
  }
  const button = $("#signin-submit");
  button.disabled = true;
  button.textContent = "Checking the key…";
  signInMessage("");
  const client = new Client(key);
  try {
    const balance = await client.balance();
    try {
      storage()?.setItem(KEY_STORAGE, key);
    } catch { /* memory only */ }
    input.value = "";
    startDashboard(client, balance);
  } catch (error) {
    const message = error instanceof ApiError ? error.message : `Could not sign in: ${error.message}`;
    signInMessage(message);
    $("#signin-error").dataset.error = error instanceof ApiError ? error.kind : "unknown";
    input.focus();
    input.select();
  } finally {
    button.disabled = false;
    button.textContent = "Sign in";
  }
}

function signOut(message = "", kind = "error") {
  for (const controller of Object.values(state.aborts)) controller.abort();
  state.aborts = {};
  state.client = null;
  state.analytics = null;
  state.keys = [];
  try {
    storage()?.removeItem(KEY_STORAGE);
  } catch { /* nothing stored */ }
  charts.destroyAll();
  // No figures of the previous key stay in the page.
  for (const tbody of $$("#dashboard tbody")) tbody.replaceChildren();
  for (const el of $$("#dashboard [data-value]")) el.textContent = "—";
  $("#key-chip").textContent = "";
  hideBanner();
  for (const dialog of $$("dialog[open]")) dialog.close();
  $("#secret-value").value = "";
  showView("signin");
  signInMessage(message, kind);
  if (message) $("#signin-error").dataset.error = kind === "error" ? "session" : "";
  $("#key-input").focus();
}

function startDashboard(client, balance = null) {
  state.client = client;
  const last6 = client.key.slice(-6);
  $("#key-chip").textContent = `ADMIN key …${last6}`;
  showView("dashboard");
  hideBanner();
  if (balance) {
    renderBalance(balance);
    loadAll({ balance: false });
  } else {
    // A key kept from earlier in this tab is checked once before the rest is asked for: a revoked key costs one
    // failed authentication, not four.
    for (const id of ["#daily", "#models", "#keyspend", "#usage", "#apikeys"]) setState($(id), "loading", "Loading…");
    loadBalance().then(() => {
      if (state.client === client) loadAll({ balance: false });
    });
  }
  $("#main").focus({ preventScroll: true });
}

// -- loading ---------------------------------------------------------------------------------------------------------

function loadAll({ balance = true } = {}) {
  hideBanner();
  if (balance) loadBalance();
  loadAnalytics();
  loadUsage();
  loadKeys();
}

async function loadBalance() {
  const section = $("#balances");
  const run = begin("balance");
  setState(section, "loading", "Loading balances…");
  try {
    const body = await state.client.balance({ signal: run.signal });
    if (run.current()) renderBalance(body);
  } catch (error) {
    if (run.current()) failed(section, error, loadBalance);
  }
}

function renderBalance(body) {
  const section = $("#balances");
  const balances = body.balances || {};
  for (const card of $$("[data-balance]", section)) {
    const name = card.dataset.balance;
    const nano = money.toNano(balances[name]);
    const value = $("[data-value]", card);
    value.textContent = money.balance(nano, name === "diem" ? "" : "$");
    value.title = money.exact(nano);
    card.dataset.exact = money.exact(nano);
    card.classList.toggle("negative", nano < 0n);
    card.classList.toggle("current", currencyKey(body.consumptionCurrency) === name);
  }
  const consumption = $("#consumption");
  if (body.canConsume && body.consumptionCurrency) {
    consumption.className = "consumption ok";
    consumption.textContent = `Usage is charged to ${currencyName(body.consumptionCurrency)} now`;
  } else {
    consumption.className = "consumption warn";
    consumption.textContent = "No balance left: usage is charged to USD, which goes below zero";
  }
  setState(section, "ready");
}

const currencyKey = (c) => ({ DIEM: "diem", USD: "usd", BUNDLED_CREDITS: "bundledCredits" })[c];
const currencyName = (c) => ({ DIEM: "DIEM", USD: "USD", BUNDLED_CREDITS: "bundled credits", VCU: "VCU" })[c] || c;

function analyticsParams() {
  const params = state.period === "custom" && state.rangeStart && state.rangeEnd
    ? { startDate: state.rangeStart, endDate: state.rangeEnd }
    : { lookback: state.period === "custom" ? "30d" : state.period };
  params.timezone = state.timezone;
  return params;
}

const ANALYTICS_SECTIONS = ["#daily", "#models", "#keyspend"];

async function loadAnalytics() {
  const run = begin("analytics");
  const params = analyticsParams();
  for (const id of ANALYTICS_SECTIONS) setState($(id), "loading", "Loading spend…");
  $("#period-label").textContent = "Loading…";
  try {
    const body = await state.client.analytics(params, { signal: run.signal });
    if (!run.current()) return;
    state.analytics = body;
    renderAnalytics(params);
  } catch (error) {
    if (!run.current()) return;
    $("#period-label").textContent = "";
    if (error instanceof ApiError && error.kind === "invalid") {
      $("#range-error").textContent = error.message;
      $("#range-error").hidden = false;
    }
    for (const id of ANALYTICS_SECTIONS) failed($(id), error, loadAnalytics);
  }
}

function setTotals(el, usdNano, diemNano, extra = {}) {
  el.dataset.totalUsd = money.nanoText(usdNano);
  el.dataset.totalDiem = money.nanoText(diemNano);
  for (const [name, value] of Object.entries(extra)) el.dataset[name] = value;
  el.replaceChildren(
    h("span", { class: "total", title: `${money.exact(usdNano)} USD` }, h("strong", {}, money.usd(usdNano)), " USD"),
    h("span", { class: "sep", "aria-hidden": "true" }, " · "),
    h("span", { class: "total", title: `${money.exact(diemNano)} DIEM` }, h("strong", {}, money.diem(diemNano, "")), " DIEM"),
  );
}

function renderAnalytics(params) {
  const body = state.analytics;
  const days = body.byDate || [];
  const first = days[0]?.date;
  const last = days[days.length - 1]?.date;
  const what = params.lookback ? `Last ${parseInt(body.lookback, 10)} days` : "Custom period";
  $("#period-label").textContent = first
    ? `${what}: ${dayLong(first)} – ${dayLong(last)} (${days.length} days, ${state.timezone})`
    : what;
  $("#period-label").dataset.lookback = body.lookback;
  renderDaily();
  renderModels();
  renderKeySpend();
}

function dailySeries() {
  const body = state.analytics;
  const days = body.byDate || [];
  if (state.split === "currency") {
    const colors = charts.palette();
    return [
      { label: "USD", currency: "USD", color: colors[0], values: days.map((d) => money.num(d.USD)) },
      { label: "DIEM", currency: "DIEM", color: colors[2], values: days.map((d) => money.num(d.DIEM)) },
    ];
  }
  const [names, rows] = state.split === "model"
    ? [body.topModels || [], body.byModelDaily || []]
    : [body.topKeyNames || [], body.byKeyDaily || []];
  return names.map((name) => ({ label: name, values: days.map((_, i) => money.num(rows[i]?.[name])) }));
}

function renderDaily() {
  const section = $("#daily");
  const days = state.analytics.byDate || [];
  const usdTotal = money.sumNano(days.map((d) => d.USD));
  const diemTotal = money.sumNano(days.map((d) => d.DIEM));
  setTotals($("#daily-totals"), usdTotal, diemTotal, { days: String(days.length) });
  for (const button of $$("[data-split]", section)) {
    button.setAttribute("aria-pressed", String(button.dataset.split === state.split));
  }
  $("#daily-table tbody").replaceChildren(...days.map((d) => h("tr", {},
    h("th", { scope: "row" }, dayLong(d.date)), moneyCell(d.USD), moneyCell(d.DIEM, "diem"))));
  const canvas = $("#daily-chart");
  if (usdTotal === 0n && diemTotal === 0n) {
    charts.destroy(canvas);
    setState(section, "empty", days.length ? "No spend in this period." : "No days in this period.");
    return;
  }
  const peak = days.reduce((best, d) => (money.num(d.USD) + money.num(d.DIEM) > best.v
    ? { v: money.num(d.USD) + money.num(d.DIEM), d: d.date } : best), { v: -1, d: "" });
  canvas.setAttribute("aria-label", `Spend by day, ${days.length} days: ${money.usd(usdTotal)} USD and ` +
    `${money.diem(diemTotal)} in total; the highest day is ${dayLong(peak.d)}. The table below has every day.`);
  setState(section, "ready");
  charts.dailyChart(canvas, days.map((d) => dayLabel(d.date)), dailySeries(), { split: state.split });
}

function renderModels() {
  const section = $("#models");
  const models = state.analytics.byModel || [];
  const usdTotal = money.sumNano(models.map((m) => m.totalUsd));
  const diemTotal = money.sumNano(models.map((m) => m.totalDiem));
  setTotals($("#models-totals"), usdTotal, diemTotal, { models: String(models.length) });
  const rows = models.flatMap((model) => {
    const meta = [model.modelType, unitsText(model.totalUnits, model.unitType)].filter(Boolean).join(" · ");
    const parts = Array.isArray(model.breakdown) ? model.breakdown : [];
    const row = h("tr", { class: parts.length ? "model-row has-parts" : "model-row", dataset: { model: model.modelName } },
      h("th", { scope: "row" },
        h("span", { class: "model-name" }, model.modelName),
        h("span", { class: "model-type", title: `${money.decimalText(model.totalUnits)} ${model.unitType || "units"}` },
          meta)),
      moneyCell(model.totalUsd), moneyCell(model.totalDiem, "diem"));
    if (!parts.length) return [row];
    // The Input / Output / Cache parts: a row of their own under the model, across the columns.
    const chips = parts.map((part) => {
      const usdNano = money.toNano(part.usd);
      const diemNano = money.toNano(part.diem);
      return h("li", { class: "part", dataset: { part: part.type, usd: money.nanoText(usdNano),
                                                  diem: money.nanoText(diemNano) },
                       title: `${part.type}: ${unitsText(part.units, model.unitType)}, ` +
                              `${money.exact(usdNano)} USD, ${money.exact(diemNano)} DIEM` },
        h("span", { class: "swatch", dataset: { type: part.type }, "aria-hidden": "true" }),
        h("span", { class: "part-type" }, part.type),
        usdNano || !diemNano ? h("span", { class: "part-spend" }, money.usd(usdNano)) : null,
        diemNano ? h("span", { class: "part-spend" }, (usdNano ? "+ " : "") + money.diem(diemNano)) : null,
        h("span", { class: "sr-only" }, `, ${unitsText(part.units, model.unitType)}`));
    });
    return [row, h("tr", { class: "parts-row", dataset: { partsOf: model.modelName } },
      h("td", { colspan: "3" }, h("ul", { class: "parts", "aria-label": `${model.modelName} by type` }, chips)))];
  });
  $("#models-table tbody").replaceChildren(...rows);
  if (!models.length) {
    setState(section, "empty", "No model was used in this period.");
    return;
  }
  $(".chart-box-models", section).style.height = `${Math.max(160, models.length * 30 + 64)}px`;
  const canvas = $("#models-chart");
  canvas.setAttribute("aria-label", `Spend by model, ${models.length} models; the biggest is ${models[0].modelName}. ` +
    "The table below has each model's Input, Output and Cache breakdown.");
  setState(section, "ready");
  charts.modelsChart(canvas, models);
  paintSwatches(section);
}

function paintSwatches(root) {
  const colors = {};
  for (const type of charts.BREAKDOWN_ORDER) colors[type] = charts.breakdownColor(type);
  for (const swatch of $$(".swatch", root)) swatch.style.backgroundColor = colors[swatch.dataset.type] || "";
}

function renderKeySpend() {
  const section = $("#keyspend");
  const keys = state.analytics.byKey || [];
  const usdTotal = money.sumNano(keys.map((k) => k.totalUsd));
  const diemTotal = money.sumNano(keys.map((k) => k.totalDiem));
  setTotals($("#keyspend-totals"), usdTotal, diemTotal, { keys: String(keys.length) });
  $("#keyspend-table tbody").replaceChildren(...keys.map((key) => h("tr", { dataset: { keyId: key.apiKeyId || "" } },
    h("th", { scope: "row" }, h("span", { class: "model-name" }, key.description),
      h("span", { class: "model-type", title: `${money.decimalText(key.totalUnits)} units` },
        (key.apiKeyId ? "" : "usage without a key · ") + unitsText(key.totalUnits, null, 1e4))),
    moneyCell(key.totalUsd), moneyCell(key.totalDiem, "diem"))));
  if (!keys.length) {
    setState(section, "empty", "No key was used in this period.");
    return;
  }
  $(".chart-box-keys", section).style.height = `${Math.max(160, keys.length * 40 + 70)}px`;
  $("#keyspend-chart").setAttribute("aria-label", `Spend by API key, ${keys.length} keys; the biggest is ` +
    `${keys[0].description}. The table next to it has the figures.`);
  setState(section, "ready");
  charts.keysChart($("#keyspend-chart"), keys);
}

// -- usage records -----------------------------------------------------------------------------------------------

/** The /billing/usage query for the table's filters; dates are whole days in the chosen zone. */
function usageParams() {
  const u = state.usage;
  const params = { limit: u.limit, page: u.page, sortOrder: u.sortOrder };
  if (u.currency) params.currency = u.currency;
  if (u.startDate) params.startDate = new Date(midnightIn(u.startDate, state.timezone)).toISOString();
  if (u.endDate) params.endDate = new Date(midnightIn(addDays(u.endDate, 1), state.timezone) - 1).toISOString();
  return params;
}

function usageFiltersValid() {
  const u = state.usage;
  const error = $("#usage-error");
  if (u.startDate && u.endDate && u.startDate > u.endDate) {
    error.textContent = "“From” must not be after “To”.";
    error.hidden = false;
    return false;
  }
  error.hidden = true;
  return true;
}

async function loadUsage() {
  const section = $("#usage");
  if (!usageFiltersValid()) return;
  const run = begin("usage");
  const params = usageParams();
  $("#usage-table").dataset.query = query(params);
  $("#usage-time-head").textContent = `Time (${state.timezone})`;
  const u = state.usage;
  $("#usage-note").textContent = u.startDate || u.endDate
    ? `Days are whole days in ${state.timezone}.` : "";
  setState(section, "loading", "Loading records…");
  setPagerDisabled(true);
  try {
    const body = await state.client.usage(params, { signal: run.signal });
    if (run.current()) renderUsage(body);
  } catch (error) {
    if (run.current()) failed(section, error, loadUsage);
  }
}

function renderUsage(body) {
  const section = $("#usage");
  const u = state.usage;
  const { page, limit, total, totalPages } = body.pagination;
  Object.assign(u, { page, total, totalPages });
  const rows = body.data || [];
  $("#usage-table tbody").replaceChildren(...rows.map(usageRow));
  const from = rows.length ? (page - 1) * limit + 1 : 0;
  const summary = $("#usage-summary");
  summary.textContent = total
    ? (rows.length ? `Records ${from.toLocaleString("en-US")}–${(from + rows.length - 1).toLocaleString("en-US")} ` +
       `of ${total.toLocaleString("en-US")}` : `${total.toLocaleString("en-US")} records`)
    : "No records";
  Object.assign(summary.dataset, { page: String(page), total: String(total), totalPages: String(totalPages),
                                   rows: String(rows.length) });
  $("#page-input").value = String(page);
  $("#page-input").max = String(Math.max(1, totalPages));
  $("#page-of").textContent = `of ${Math.max(1, totalPages).toLocaleString("en-US")}`;
  setPagerDisabled(false);
  $("#usage-pager").hidden = totalPages <= 1 && page === 1;
  $("#download-csv").disabled = false;
  if (!rows.length) {
    const filtered = u.currency || u.startDate || u.endDate;
    if (total && page > totalPages) {
      setState(section, "empty", `Page ${page} is past the last page (${totalPages}).`,
               { label: "Go to the last page", run: () => goToPage(totalPages) });
    } else if (filtered) {
      setState(section, "empty", "No usage records match these filters.",
               { label: "Clear filters", run: () => $("#usage-filters").reset() });
    } else {
      setState(section, "empty", "No usage recorded yet.");
    }
    return;
  }
  setState(section, "ready");
}

function usageRow(row) {
  const details = row.inferenceDetails;
  const amount = money.toNano(row.amount);
  const tokens = details ? [details.promptTokens !== null ? `${details.promptTokens} in` : null,
                            details.completionTokens !== null ? `${details.completionTokens} out` : null]
    .filter(Boolean).join(" · ") : "";
  return h("tr", {},
    h("td", { class: "nowrap", title: row.timestamp }, h("time", { datetime: row.timestamp }, localTime(row.timestamp))),
    h("td", { class: "sku" }, h("span", {}, row.sku),
      row.notes ? h("span", { class: "notes" }, row.notes) : null),
    h("td", { class: "num col-wide" }, money.decimalText(row.units)),
    h("td", { class: "num col-wide" }, row.pricePerUnitUsd === null ? "" : money.decimalText(row.pricePerUnitUsd)),
    h("td", { class: `num amount ${amount > 0n ? "credit" : ""}`, title: `${money.decimalText(row.amount)} ${row.currency}` },
      (amount > 0n ? "+" : "") + money.signedExact(row.amount)),
    h("td", {}, h("span", { class: `currency currency-${row.currency}` }, currencyName(row.currency))),
    h("td", { class: "col-wide request" }, details ? [
      h("span", { class: "mono", title: details.requestId }, shorten(details.requestId, 22)),
      tokens ? h("span", { class: "notes" }, tokens) : null,
    ] : h("span", { class: "muted" }, "—")));
}

function shorten(text, n) {
  return text && text.length > n ? text.slice(0, n - 1) + "…" : text || "";
}

function setPagerDisabled(disabled) {
  const { page, totalPages } = state.usage;
  for (const button of $$("[data-page]", $("#usage-pager"))) {
    const which = button.dataset.page;
    const atStart = page <= 1;
    const atEnd = page >= totalPages;
    button.disabled = disabled || ((which === "first" || which === "prev") ? atStart : atEnd);
  }
  $("#page-input").disabled = disabled && !$("#page-input").matches(":focus");
}

function goToPage(page) {
  const last = Math.max(1, state.usage.totalPages);
  state.usage.page = Math.min(Math.max(1, page), last);
  loadUsage();
}

function readUsageFilters() {
  const form = $("#usage-filters");
  const u = state.usage;
  u.startDate = form.startDate.value;
  u.endDate = form.endDate.value;
  u.currency = form.currency.value;
  u.sortOrder = form.sortOrder.value;
  u.limit = Number(form.limit.value);
  u.page = 1;
}

async function downloadCsv() {
  const button = $("#download-csv");
  const error = $("#usage-error");
  if (!usageFiltersValid()) return;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  const label = button.lastChild.textContent;
  button.lastChild.textContent = " Preparing…";
  try {
    const params = usageParams();
    const response = await state.client.usageCsv(params);
    const blob = await response.blob();
    const name = filenameOf(response.headers.get("content-disposition"), "billing_usage.csv");
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30_000);
    button.dataset.downloaded = name;
    button.dataset.query = query(params);
    error.hidden = true;
  } catch (e) {
    if (e instanceof ApiError && e.isAuth) {
      signOut(`Signed out: ${e.message}`);
      return;
    }
    error.textContent = `The CSV could not be downloaded: ${e.message}`;
    error.hidden = false;
  } finally {
    button.lastChild.textContent = label;
    button.removeAttribute("aria-busy");
    button.disabled = false;
  }
}

// -- API keys --------------------------------------------------------------------------------------------------------

async function loadKeys() {
  const section = $("#apikeys");
  const run = begin("keys");
  setState(section, "loading", "Loading keys…");
  try {
    const body = await state.client.keys({ signal: run.signal });
    if (run.current()) renderKeys(body.data || []);
  } catch (error) {
    if (run.current()) failed(section, error, loadKeys);
  }
}

function isThisSession(key) {
  return state.client && key.apiKeyType === "ADMIN" && key.last6Chars === state.client.key.slice(-6);
}

function when(iso) {
  return iso ? localTime(iso).slice(0, 16) : "never";
}

function renderKeys(keys) {
  state.keys = keys;
  const section = $("#apikeys");
  $("#keys-table tbody").replaceChildren(...keys.map((key) => {
    const week = key.usage?.trailingSevenDays || {};
    const weekUsd = money.toNano(week.usd);
    const weekDiem = money.toNano(week.diem);
    const spend = [money.usd(weekUsd), weekDiem ? money.diem(weekDiem) : null].filter(Boolean).join(" · ");
    const name = key.description || `Key …${key.last6Chars}`;
    const meta = [`…${key.last6Chars}`, key.expiresAt ? `expires ${when(key.expiresAt)}` : null].filter(Boolean);
    return h("tr", { dataset: { keyId: key.id } },
      h("th", { scope: "row" }, h("span", { class: key.description ? "model-name" : "model-name muted" }, name,
        isThisSession(key) ? h("span", { class: "pill pill-self" }, "this tab") : null),
        h("span", { class: "model-type" }, h("code", { title: "the key's last 6 characters" }, meta[0]),
          meta.length > 1 ? ` · ${meta[1]}` : null)),
      h("td", {}, h("span", { class: `pill pill-${key.apiKeyType.toLowerCase()}` }, key.apiKeyType)),
      h("td", { class: "col-wide nowrap", title: key.createdAt }, when(key.createdAt)),
      h("td", { class: "col-wide nowrap", title: key.lastUsedAt || "" }, when(key.lastUsedAt)),
      h("td", { class: "num col-wide", title: `${week.usd} USD, ${week.diem} DIEM` }, spend),
      h("td", { class: "actions" }, h("button", {
        type: "button", class: "btn btn-small btn-danger-ghost", "aria-label": `Revoke key ${name}`,
        onclick: () => confirmRevoke(key),
      }, "Revoke")));
  }));
  if (!keys.length) setState(section, "empty", "No active keys. Create one above.");
  else setState(section, "ready");
}

async function createKey(event) {
  event.preventDefault();
  const form = $("#create-key");
  const error = $("#create-key-error");
  const description = form.description.value.trim();
  if (!description) {
    error.textContent = "Give the key a description, so that you can tell it apart later.";
    error.hidden = false;
    form.description.focus();
    return;
  }
  const body = { apiKeyType: form.apiKeyType.value, description };
  if (form.expiresAt.value) body.expiresAt = form.expiresAt.value;
  const submit = $("#create-key-submit");
  submit.disabled = true;
  try {
    const answer = await state.client.createKey(body);
    error.hidden = true;
    form.reset();
    showSecret(answer.data);
    loadKeys();
  } catch (e) {
    if (e instanceof ApiError && e.isAuth) {
      signOut(`Signed out: ${e.message}`);
      return;
    }
    error.textContent = `The key was not created: ${e.message}`;
    error.hidden = false;
  } finally {
    submit.disabled = false;
  }
}

function showSecret(created) {
  const dialog = $("#secret-dialog");
  $("#secret-name").textContent = `${created.description || "the new key"} (${created.apiKeyType})`;
  $("#secret-value").value = created.apiKey;
  $("#secret-copied").textContent = "";
  dialog.dataset.keyId = created.id;
  dialog.showModal();
  $("#secret-value").focus();
  $("#secret-value").select();
}

async function copySecret() {
  const input = $("#secret-value");
  try {
    await navigator.clipboard.writeText(input.value);
    $("#secret-copied").textContent = "Copied to the clipboard.";
  } catch {
    input.focus();
    input.select();
    $("#secret-copied").textContent = "Selected: press Ctrl+C (⌘C) to copy.";
  }
}

function confirmRevoke(key) {
  const dialog = $("#confirm-dialog");
  const name = key.description || `Key …${key.last6Chars}`;
  $("#confirm-text").textContent = `“${name}” (${key.apiKeyType}, …${key.last6Chars}) stops working at once. ` +
    "Its usage stays in the history.";
  $("#confirm-self").hidden = !isThisSession(key);
  dialog.dataset.keyId = key.id;
  dialog.returnValue = "";
  dialog.showModal();
  $("#confirm-cancel").focus();
}

async function onConfirmClose() {
  const dialog = $("#confirm-dialog");
  if (dialog.returnValue !== "revoke" || !state.client) return;
  const key = state.keys.find((k) => k.id === dialog.dataset.keyId);
  if (!key) return;
  const section = $("#apikeys");
  try {
    await state.client.revokeKey(key.id);
    if (isThisSession(key)) {
      signOut("You revoked the key this tab was signed in with. Sign in with another ADMIN key.", "info");
      return;
    }
    loadKeys();
  } catch (error) {
    if (error instanceof ApiError && error.kind === "not-found") loadKeys();  // revoked elsewhere already
    else failed(section, error, loadKeys);
  }
}

// -- wiring ------------------------------------------------------------------------------------------------------------

function syncPeriodControls() {
  $(`input[name=period][value="${state.period}"]`).checked = true;
  $("#custom-range").hidden = state.period !== "custom";
  $("#range-start").value = state.rangeStart;
  $("#range-end").value = state.rangeEnd;
}

function applyCustomRange() {
  const start = $("#range-start").value;
  const end = $("#range-end").value;
  const error = $("#range-error");
  let message = "";
  if (!start || !end) message = "Choose both days of the period.";
  else if (end < start) message = "The period must not end before it starts.";
  else if (daysBetween(start, end) > MAX_RANGE_DAYS) message = `A period is at most ${MAX_RANGE_DAYS} days.`;
  error.textContent = message;
  error.hidden = !message;
  if (message) return;
  state.rangeStart = start;
  state.rangeEnd = end;
  savePrefs();
  loadAnalytics();
}

function wire() {
  $("#signin-form").addEventListener("submit", signIn);
  $("#key-reveal").addEventListener("click", (event) => {
    const input = $("#key-input");
    const show = input.type === "password";
    input.type = show ? "text" : "password";
    event.currentTarget.textContent = show ? "Hide" : "Show";
    event.currentTarget.setAttribute("aria-pressed", String(show));
  });
  $("#sign-out").addEventListener("click", () => signOut("Signed out. The key was removed from this tab.", "info"));
  $("#banner-retry").addEventListener("click", () => loadAll());
  $("#refresh").addEventListener("click", () => loadAll());

  for (const radio of $$("input[name=period]")) {
    radio.addEventListener("change", () => {
      state.period = radio.value;
      $("#range-error").hidden = true;
      if (state.period === "custom") {
        if (!state.rangeStart || !state.rangeEnd) {
          state.rangeEnd = todayIn(state.timezone);
          state.rangeStart = addDays(state.rangeEnd, -29);
        }
        syncPeriodControls();
        savePrefs();
        loadAnalytics();
        return;
      }
      syncPeriodControls();
      savePrefs();
      loadAnalytics();
    });
  }
  $("#controls").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.period === "custom") applyCustomRange();
  });
  $("#timezone").addEventListener("change", (event) => {
    state.timezone = event.target.value;
    savePrefs();
    $("#range-error").hidden = true;
    loadAnalytics();
    state.usage.page = 1;
    loadUsage();
    if (state.keys.length) renderKeys(state.keys);
  });
  for (const button of $$("#daily [data-split]")) {
    button.addEventListener("click", () => {
      state.split = button.dataset.split;
      savePrefs();
      if (state.analytics) renderDaily();
    });
  }

  const filters = $("#usage-filters");
  filters.addEventListener("change", () => {
    readUsageFilters();
    loadUsage();
  });
  filters.addEventListener("submit", (event) => event.preventDefault());
  filters.addEventListener("reset", () => setTimeout(() => {
    readUsageFilters();
    loadUsage();
  }));
  $("#usage-pager").addEventListener("click", (event) => {
    const button = event.target.closest("[data-page]");
    if (!button || button.disabled) return;
    const { page, totalPages } = state.usage;
    goToPage({ first: 1, prev: page - 1, next: page + 1, last: totalPages }[button.dataset.page]);
  });
  $("#page-jump").addEventListener("submit", (event) => {
    event.preventDefault();
    const page = parseInt($("#page-input").value, 10);
    if (Number.isFinite(page)) goToPage(page);
  });
  $("#download-csv").addEventListener("click", downloadCsv);

  $("#create-key").addEventListener("submit", createKey);
  $("#new-key-expires").min = todayIn("UTC");
  $("#secret-copy").addEventListener("click", copySecret);
  $("#secret-dialog").addEventListener("close", () => {
    $("#secret-value").value = "";  // shown once: gone from the page when the dialog closes
    $("#create-key [name=description]").focus();
  });
  $("#confirm-dialog").addEventListener("close", onConfirmClose);
}

function boot() {
  state.timezone = browserZone();
  loadPrefs();
  fillZones($("#timezone"), state.timezone);
  syncPeriodControls();
  wire();
  let key = null;
  try {
    key = storage()?.getItem(KEY_STORAGE) || null;
  } catch { /* none */ }
  if (key) startDashboard(new Client(key));
  else {
    showView("signin");
    $("#key-input").focus();
  }
}

boot();
