// Exact money: the API sends amounts as JSON numbers with at most 9 decimals (nano-units, API.md §2). Totals are
// summed here as BigInt nano-units, so they equal the API's to the last digit; only what is shown is rounded.
//
// api.js parses answers with parseExact(): a JSON number written with a fraction or an exponent comes back as its
// source text (a string), so that no digit is lost to binary floating point; integers stay numbers. Everything
// below accepts either.

const NANO = 1_000_000_000n;
const SCALE = 9;

/** JSON.parse, keeping decimal numbers as their exact source text (where the browser exposes it). */
export function parseExact(text) {
  return JSON.parse(text, function revive(_key, value, context) {
    if (typeof value === "number" && !Number.isInteger(value)) {
      const source = context && typeof context.source === "string" ? context.source : null;
      return source ?? decimalText(value);
    }
    if (typeof value === "number" && context && typeof context.source === "string" && /[.eE]/.test(context.source)) {
      return context.source;  // 1.0 or 1e3: keep as written
    }
    return value;
  });
}

/** A plain decimal text (no exponent) for a number, a BigInt or a decimal string. */
export function decimalText(value) {
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "string") return expand(value.trim());
  if (typeof value !== "number" || !Number.isFinite(value)) throw new TypeError(`not a number: ${value}`);
  return expand(String(value));
}

function expand(text) {
  const m = /^([+-]?)(\d+)(?:\.(\d*))?[eE]([+-]?\d+)$/.exec(text);
  if (!m) return text.replace(/^\+/, "");
  const sign = m[1] === "-" ? "-" : "";
  const digits = m[2] + (m[3] || "");
  const point = m[2].length + Number(m[4]);
  let out;
  if (point <= 0) out = "0." + "0".repeat(-point) + digits;
  else if (point >= digits.length) out = digits + "0".repeat(point - digits.length);
  else out = digits.slice(0, point) + "." + digits.slice(point);
  out = out.replace(/^0+(?=\d)/, "");
  if (out.includes(".")) out = out.replace(/\.?0+$/, "");
  return sign + (out === "" ? "0" : out);
}

/** Nano-units (BigInt) of a number or decimal text; beyond 9 decimals it rounds half to even. */
export function toNano(value) {
  if (value === null || value === undefined || value === "") return 0n;
  const text = decimalText(value);
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(text);
  if (!m) throw new TypeError(`not a decimal: ${value}`);
  const fraction = m[3] || "";
  let nano = BigInt(m[2]) * NANO + BigInt((fraction + "000000000").slice(0, SCALE));
  const rest = fraction.slice(SCALE);
  if (/[1-9]/.test(rest)) {
    const half = "5".padEnd(rest.length, "0");
    if (rest > half || (rest === half && nano % 2n === 1n)) nano += 1n;
  }
  return m[1] === "-" ? -nano : nano;
}

/** The shortest exact decimal text of nano-units: 28023019960n → "28.02301996". */
export function nanoText(nano) {
  const negative = nano < 0n;
  const abs = negative ? -nano : nano;
  const whole = abs / NANO;
  const fraction = (abs % NANO).toString().padStart(SCALE, "0").replace(/0+$/, "");
  return (negative ? "-" : "") + whole.toString() + (fraction ? "." + fraction : "");
}

export function sumNano(values) {
  let total = 0n;
  for (const value of values) total += toNano(value);
  return total;
}

/** A JS number for charts (never for totals). */
export function num(value) {
  if (value === null || value === undefined || value === "") return 0;
  return typeof value === "number" ? value : Number(value);
}

const GROUP = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

function roundNano(nano, decimals) {
  const unit = 10n ** BigInt(SCALE - decimals);
  const negative = nano < 0n;
  const abs = negative ? -nano : nano;
  let q = abs / unit;
  if ((abs % unit) * 2n >= unit) q += 1n;  // half away from zero, as people round
  return { negative: negative && q !== 0n, q, decimals };
}

function rounded({ negative, q, decimals }) {
  const scale = 10n ** BigInt(decimals);
  const whole = GROUP.format(q / scale);
  const fraction = decimals ? "." + (q % scale).toString().padStart(decimals, "0") : "";
  return { negative, text: whole + fraction };
}

/**
 * Money for reading: 2 decimals from one cent up; below that two significant digits (at most 9 decimals), so a
 * small spend shows as $0.00021 rather than $0.00. Returns {negative, text} without the sign.
 */
export function roundForDisplay(value) {
  const nano = typeof value === "bigint" ? value : toNano(value);
  const abs = nano < 0n ? -nano : nano;
  if (abs === 0n || abs >= 10_000_000n) return rounded(roundNano(nano, 2));
  // Below one cent: the zeros after the point, then two significant digits (abs has 1..7 digits of nano-units).
  const decimals = Math.min(SCALE, SCALE - abs.toString().length + 2);
  const out = rounded(roundNano(nano, decimals));
  out.text = out.text.replace(/0+$/, "").replace(/\.$/, "");
  return out;
}

const MINUS = "\u2212";

/** "$1,234.56", "−$0.0013" */
export function usd(value) {
  const { negative, text } = roundForDisplay(value);
  return (negative ? MINUS : "") + "$" + text;
}

/** "5.91 DIEM" (DIEM is not a fiat currency: no symbol). */
export function diem(value, unit = " DIEM") {
  const { negative, text } = roundForDisplay(value);
  return (negative ? MINUS : "") + text + unit;
}

/** A balance: always 2 decimals; a dust amount shows as "<$0.01" rather than a misleading "$0.00". */
export function balance(value, symbol = "$") {
  const nano = typeof value === "bigint" ? value : toNano(value);
  const abs = nano < 0n ? -nano : nano;
  if (abs !== 0n && abs < 5_000_000n) {
    if (nano > 0n) return "<" + symbol + "0.01";
    const { text } = roundForDisplay(nano);  // a debt, however small, is shown as one
    return MINUS + symbol + text;
  }
  const { negative, text } = rounded(roundNano(nano, 2));
  return (negative ? MINUS : "") + symbol + text;
}

/** An exact value for a title attribute: "28.02301996". */
export function exact(value) {
  return nanoText(typeof value === "bigint" ? value : toNano(value));
}

/** A ledger amount exactly as the API has it, with a typographic minus: "−0.0013328". */
export function signedExact(value) {
  const text = decimalText(value);
  return text.startsWith("-") ? MINUS + text.slice(1) : text;
}
