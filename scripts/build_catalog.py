"""Build the default SKU catalogue (usage_ledger/data/catalog.toml) from Venice's public model list.

Usage: python scripts/build_catalog.py [--source data/venice-models-2026-08-22.json] [--output PATH]

The mapping from price shapes to SKUs is the table of API.md §2 ("SKUs and the default catalogue").
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT / "data" / "venice-models-2026-08-22.json"
DEFAULT_OUTPUT = ROOT / "usage_ledger" / "data" / "catalog.toml"

# Price keys that are real prices but are charged as explicit priced rows, not catalogue SKUs.
_NO_SKU = {"quality", "durations", "inputImages", "upscale"}

_TOKENS = {"model_type": "LLM", "unit_type": "tokens", "unit_scale": 1_000_000}
_TEXT_ROLES = [  # (price key, SKU part, breakdown), in the order `expand` charges them
    ("input", "input", "Input"),
    ("cache_input", "input-cached", "Cache Read"),
    ("cache_write", "cache-write", "Cache Write"),
    ("output", "output", "Output"),
]
_UNIT_TYPES = {"image", "inpaint", "upscale", "music"}


def clean_price(value: float | int) -> str:
    """The decimal that was meant: 0.11500000000000002 -> "0.115" (12 significant digits drop the float noise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"not a price: {value!r}")
    return format(Decimal(format(value, ".12g")).normalize(), "f")


def _prices(price: dict) -> dict:
    return {"usd": clean_price(price["usd"]), "diem": clean_price(price["diem"])}


def model_skus(model: dict) -> list[dict]:
    """The SKUs of one model, in charging order; empty when none of its price shapes has a SKU."""
    mid, mtype = model["id"], model["type"]
    pricing = dict(model["model_spec"].get("pricing") or {})
    skus: list[dict] = []

    def add(suffix: str, price: dict, **fields) -> None:
        skus.append({"sku": f"{mid}-{suffix}", **fields, **_prices(price)})

    if mtype == "text":
        extended = dict(pricing.pop("extended", {}))
        for key, part, breakdown in _TEXT_ROLES:
            if key in pricing:
                add(f"llm-{part}-mtoken", pricing.pop(key), **_TOKENS, breakdown=breakdown)
        extended.pop("context_token_threshold", None)
        for key, part, breakdown in _TEXT_ROLES:
            if key in extended:
                add(f"llm-extended-{part}-mtoken", extended.pop(key), **_TOKENS, breakdown=breakdown, extended=True)
        if extended:
            raise ValueError(f"{mid}: unknown extended price keys {sorted(extended)}")
    elif mtype == "embedding" and "input" in pricing:
        add("embedding-input-mtoken", pricing.pop("input"), **_TOKENS, breakdown="Input")
        pricing.pop("output", None)  # embeddings produce no tokens to charge; see API.md §2
    elif mtype == "tts" and "input" in pricing:
        add("tts-mchar", pricing.pop("input"), model_type="TTS", unit_type="chars", unit_scale=1_000_000,
            breakdown="Input")
    elif mtype == "asr" and "per_audio_second" in pricing:
        add("asr-second", pricing.pop("per_audio_second"), model_type="ASR", unit_type="seconds", unit_scale=1,
            breakdown="Input")

    if mtype in _UNIT_TYPES:
        price = pricing.pop("generation", None) or pricing.pop("inpaint", None)
        if price is None and pricing.get("resolutions"):
            price = next(iter(pricing["resolutions"].values()))
        pricing.pop("resolutions", None)
        if price is not None:
            music = mtype == "music"
            add(f"{mtype}-unit", price, model_type=None if music else "IMAGE",
                unit_type="generations" if music else "images", unit_scale=1, breakdown="Generation")
    if "per_thousand_characters" in pricing:
        add("tts-kchar", pricing.pop("per_thousand_characters"), model_type="TTS", unit_type="chars",
            unit_scale=1000, breakdown="Input")
    if mtype == "music" and "per_second" in pricing:
        add("music-second", pricing.pop("per_second"), model_type=None, unit_type="seconds", unit_scale=1,
            breakdown="Input")

    # Fail loudly on a new price shape instead of silently shipping a model without its price.
    if unknown := set(pricing) - _NO_SKU:
        raise ValueError(f"{mid} ({mtype}): no SKU rule for price keys {sorted(unknown)}")
    return skus


def _str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def render(models: list[dict], source_name: str) -> str:
    lines = [
        "# Default SKU catalogue of usage_ledger. GENERATED, do not edit by hand.",
        f"# Source: {source_name} (Venice.ai public model list, veniceai/api-docs data/static-models.json).",
        "# Regenerate with: python scripts/build_catalog.py",
        "# Prices are decimal strings per billing unit; a unit is unit_scale natural units (tokens, chars, ...).",
    ]
    seen: set[str] = set()
    for model in sorted(models, key=lambda m: m["id"]):
        skus = model_skus(model)
        if not skus:
            continue
        spec = model["model_spec"]
        lines += ["", f"[models.{_str(model['id'])}]", f"name = {_str(spec.get('name') or model['id'])}",
                  f"type = {_str(model['type'])}"]
        threshold = (spec["pricing"].get("extended") or {}).get("context_token_threshold")
        if threshold is not None:
            lines.append(f"context_token_threshold = {int(threshold)}")
        for sku in skus:
            if sku["sku"] in seen:
                raise ValueError(f"duplicate SKU {sku['sku']}")
            seen.add(sku["sku"])
            lines += ["", f"[skus.{_str(sku['sku'])}]", f"model = {_str(model['id'])}"]
            if sku["model_type"] is not None:
                lines.append(f"model_type = {_str(sku['model_type'])}")
            lines += [
                f"unit_type = {_str(sku['unit_type'])}",
                f"breakdown = {_str(sku['breakdown'])}",
                f"unit_scale = {sku['unit_scale']}",
            ]
            if sku.get("extended"):
                lines.append("extended = true")
            lines += [f"usd = {_str(sku['usd'])}", f"diem = {_str(sku['diem'])}"]
    return "\n".join(lines) + "\n"


def build(source: Path, output: Path) -> None:
    models = json.loads(source.read_text(encoding="utf-8"))
    try:
        name = source.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        name = source.name
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(render(models, name).encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    try:
        build(args.source, args.output)
    except (OSError, ValueError, KeyError) as exc:
        print(f"build_catalog: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
