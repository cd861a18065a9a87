// Chart.js (vendor/chart.umd.min.js, loaded as a classic script before the modules) drawing the analytics.

import { diem, num, usd } from "./money.js";

const charts = new Map();  // canvas id -> Chart

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export function palette() {
  return Array.from({ length: 9 }, (_, i) => css(`--series-${i + 1}`));
}

export const BREAKDOWN_ORDER = ["Input", "Output", "Cache Read", "Cache Write", "Generation", "Total"];

function breakdownColor(type) {
  const p = palette();
  return { Input: p[0], Output: p[1], "Cache Read": p[2], "Cache Write": p[3], Generation: p[4], Total: p[5] }[type]
    || p[8];
}

function reducedMotion() {
  return window.matchMedia("(prefers-reduced-motion: reduce)").matches;
}

function baseOptions() {
  const grid = css("--grid");
  const text = css("--muted");
  Chart.defaults.font.family = css("--font");
  Chart.defaults.color = text;
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: reducedMotion() ? false : { duration: 250 },
    interaction: { mode: "index", intersect: false },
    plugins: {
      legend: { position: "bottom", labels: { boxWidth: 12, boxHeight: 12, usePointStyle: true, pointStyle: "rectRounded" } },
      tooltip: { padding: 10, boxPadding: 4 },
    },
    scales: {
      x: { stacked: true, grid: { display: false }, border: { color: grid } },
      y: { stacked: true, grid: { color: grid }, border: { display: false }, beginAtZero: true },
    },
  };
}

function draw(canvas, config) {
  const existing = charts.get(canvas.id);
  if (existing) existing.destroy();
  if (!window.Chart) return null;  // the page still works (tables) if the library failed to load
  const chart = new Chart(canvas, config);
  charts.set(canvas.id, chart);
  return chart;
}

export function destroy(canvas) {
  charts.get(canvas.id)?.destroy();
  charts.delete(canvas.id);
}

export function destroyAll() {
  for (const chart of charts.values()) chart.destroy();
  charts.clear();
}

const moneyTick = (value) => (Math.abs(value) >= 1000 ? "$" + (value / 1000).toFixed(1) + "k" : "$" + +value.toFixed(4));

/**
 * Spend by day: stacked bars, split by currency (USD, DIEM), by model or by key (the API's top 8 + Other).
 * @param labels day labels; @param series [{label, values: number[], currency?}]
 */
export function dailyChart(canvas, labels, series, { split }) {
  const colors = palette();
  const options = baseOptions();
  options.scales.y.ticks = { callback: moneyTick, maxTicksLimit: 6 };
  options.scales.x.ticks = { autoSkip: true, maxRotation: 0, autoSkipPadding: 12 };
  options.plugins.tooltip.callbacks = {
    label: (item) => {
      const value = item.raw;
      if (!value) return null;
      const text = series[item.datasetIndex].currency === "DIEM" ? diem(String(value)) : usd(String(value));
      return ` ${item.dataset.label}: ${text}`;
    },
    footer: (items) => {
      if (split !== "currency") {
        const total = items.reduce((sum, item) => sum + item.raw, 0);
        return `Total: ${usd(String(+total.toFixed(9)))}`;
      }
      return "";
    },
  };
  options.plugins.tooltip.filter = (item) => item.raw !== 0;
  return draw(canvas, {
    type: "bar",
    data: {
      labels,
      datasets: series.map((s, i) => ({
        label: s.label,
        data: s.values,
        backgroundColor: s.color || colors[i % colors.length],
        borderRadius: 3,
        maxBarThickness: 36,
      })),
    },
    options,
  });
}

/** Spend by model, one horizontal bar per model, stacked by breakdown type (Input / Output / Cache ...). */
export function modelsChart(canvas, models) {
  const types = BREAKDOWN_ORDER.filter((type) => models.some((m) => partsOf(m).some((p) => p.type === type)));
  const options = stackedBarOptions(models, "modelName", (item) => usd(String(item.raw)));
  return draw(canvas, {
    type: "bar",
    data: {
      labels: models.map((m) => m.modelName),
      datasets: types.map((type) => ({
        label: type,
        data: models.map((m) => spendOf(partsOf(m).find((p) => p.type === type))),
        backgroundColor: breakdownColor(type),
        borderRadius: 3,
        maxBarThickness: 22,
      })),
    },
    options,
  });
}

/** Spend by API key: horizontal bars, USD and DIEM stacked. */
export function keysChart(canvas, keys) {
  const colors = palette();
  const options = stackedBarOptions(keys, "description",
    (item) => (item.datasetIndex ? diem(String(item.raw)) : usd(String(item.raw))));
  return draw(canvas, {
    type: "bar",
    data: {
      labels: keys.map((k) => k.description),
      datasets: [
        { label: "USD", data: keys.map((k) => num(k.totalUsd)), backgroundColor: colors[0], borderRadius: 3, maxBarThickness: 22 },
        { label: "DIEM", data: keys.map((k) => num(k.totalDiem)), backgroundColor: colors[2], borderRadius: 3, maxBarThickness: 22 },
      ],
    },
    options,
  });
}

/** Horizontal bars stacked per item (a model, a key), named by item[field]; `amount` writes a segment's value. */
function stackedBarOptions(items, field, amount) {
  const options = baseOptions();
  options.indexAxis = "y";
  options.interaction = { mode: "y", intersect: false };
  options.scales = {
    x: { stacked: true, beginAtZero: true, grid: { color: css("--grid") }, border: { display: false },
         ticks: { callback: moneyTick, maxTicksLimit: 5 } },
    y: { stacked: true, grid: { display: false }, ticks: { autoSkip: false, callback: shortLabel(items, field) } },
  };
  options.plugins.tooltip.callbacks = {
    title: (tooltipItems) => tooltipItems.length ? items[tooltipItems[0].dataIndex][field] : "",
    label: (item) => (item.raw ? ` ${item.dataset.label}: ${amount(item)}` : null),
  };
  options.plugins.tooltip.filter = (item) => item.raw !== 0;
  return options;
}

function shortLabel(items, field) {
  return function label(value) {
    const text = String(items[value]?.[field] ?? this.getLabelForValue(value));
    return text.length > 22 ? text.slice(0, 21) + "…" : text;
  };
}

/** A model's parts: its breakdown, or the whole as one "Total" part. */
export function partsOf(model) {
  if (Array.isArray(model.breakdown) && model.breakdown.length) return model.breakdown;
  return [{ type: "Total", usd: model.totalUsd, diem: model.totalDiem, units: model.totalUnits }];
}

function spendOf(part) {
  return part ? +(num(part.usd) + num(part.diem)).toFixed(9) : 0;
}

export { breakdownColor };
