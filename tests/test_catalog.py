import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from usage_ledger.catalog import Catalog, CatalogError, EventQuantities, PricingError

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "data" / "venice-models-2026-08-22.json"
PACKAGED = ROOT / "usage_ledger" / "data" / "catalog.toml"
MODELS = json.loads(SOURCE.read_text(encoding="utf-8"))
# Price shapes that are charged as explicit priced rows, never as catalogue SKUs (API.md §2).
NO_SKU_SHAPES = {"quality", "durations", "inputImages", "upscale"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def skus_of(catalog: Catalog, model_id: str) -> dict[str, Decimal]:
    return {s.sku: s.price_usd for s in catalog.skus.values() if s.model_id == model_id}


def expand(catalog: Catalog, model_id: str, **quantities) -> dict[str, Decimal]:
    return {info.sku: units for info, units in catalog.expand(model_id, EventQuantities(**quantities))}


def source_prices(pricing: dict):
    """Every {usd, diem} leaf of a model's pricing, with its path."""
    for key, value in pricing.items():
        if isinstance(value, dict) and "usd" in value:
            yield key, value
        elif isinstance(value, dict):
            for path, leaf in source_prices(value):
                yield f"{key}.{path}", leaf


# --- the generated file ---------------------------------------------------------------------------------------


def test_packaged_catalogue_is_exactly_what_the_build_script_produces(tmp_path):
    out = tmp_path / "catalog.toml"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_catalog.py"), "--output", str(out)],
                   check=True, cwd=tmp_path)
    assert out.read_bytes() == PACKAGED.read_bytes(), "run: python scripts/build_catalog.py"


def test_header_names_the_source_and_the_command():
    head = PACKAGED.read_text(encoding="utf-8").splitlines()[:4]
    assert any("data/venice-models-2026-08-22.json" in line for line in head)
    assert any("python scripts/build_catalog.py" in line for line in head)
    assert all(line.startswith("#") for line in head)


def test_every_priced_model_has_skus_and_video_models_none(catalog):
    assert sum(m["type"] == "video" for m in MODELS) == 116
    for m in MODELS:
        pricing = m["model_spec"].get("pricing") or {}
        if m["type"] == "video":
            assert not pricing and not catalog.has_model(m["id"]), m["id"]
        elif set(pricing) - NO_SKU_SHAPES:
            assert catalog.has_model(m["id"]) and skus_of(catalog, m["id"]), m["id"]
        else:  # priced only by shapes that have no SKU, e.g. music `durations`
            assert not catalog.has_model(m["id"]), m["id"]
    assert len({s.model_id for s in catalog.skus.values()}) == 210
    assert len(catalog.skus) == 475


def test_skus_are_named_after_the_model_id_as_written(catalog):
    by_id = {m["id"]: m for m in MODELS}
    for info in catalog.skus.values():
        assert info.sku.startswith(info.model_id + "-")
        assert info.model_name == by_id[info.model_id]["model_spec"]["name"]
    assert catalog.sku("nvidia/parakeet-tdt-0.6b-v3-asr-second") is not None
    assert catalog.sku("zai-org-glm-4.7-llm-input-mtoken") is not None


def test_no_price_carries_float_noise(catalog):
    assert "0.11500000000000002" in SOURCE.read_text()  # the data does carry noise
    text = PACKAGED.read_text(encoding="utf-8")
    assert "00000000" not in text and "99999999" not in text
    by_id = {m["id"]: m for m in MODELS}
    noisy = 0
    for info in catalog.skus.values():
        sources = [leaf for _, leaf in source_prices(by_id[info.model_id]["model_spec"]["pricing"])]
        for price, currency in ((info.price_usd, "usd"), (info.price_diem, "diem")):
            assert len(price.normalize().as_tuple().digits) <= 12, info.sku
            cleaned = [Decimal(format(leaf[currency], ".12g")) for leaf in sources]
            assert price in cleaned, info.sku
            match = next(leaf[currency] for leaf in sources if Decimal(format(leaf[currency], ".12g")) == price)
            assert abs(price - Decimal(match)) < Decimal("1e-15")
            noisy += Decimal(match) != price
    assert noisy >= 2  # at least the two ElevenLabs prices were cleaned


def test_spot_checked_prices(catalog):
    glm_out = catalog.sku("zai-org-glm-5-1-llm-output-mtoken")
    assert (glm_out.price_usd, glm_out.price_diem) == (Decimal("4.84"), Decimal("4.84"))
    assert (glm_out.model_type, glm_out.unit_type, glm_out.breakdown, glm_out.unit_scale) == \
        ("LLM", "tokens", "Output", 1_000_000)
    assert glm_out.model_name == "GLM 5.1"

    kchar = catalog.sku("elevenlabs-tts-multilingual-v2-tts-kchar")  # a music-typed model priced per 1000 chars
    assert kchar.price_usd == Decimal("0.115") and str(kchar.price_usd) == "0.115"
    assert kchar.price_diem == Decimal("0.115")
    assert (kchar.model_type, kchar.unit_type, kchar.breakdown, kchar.unit_scale) == ("TTS", "chars", "Input", 1000)

    scribe = catalog.sku("elevenlabs/scribe-v2-asr-second")
    assert scribe.price_usd == Decimal("0.000167")
    assert (scribe.model_type, scribe.unit_type, scribe.unit_scale) == ("ASR", "seconds", 1)

    sfx = catalog.sku("elevenlabs-sound-effects-v2-music-second")
    assert sfx.price_usd == Decimal("0.0023") and sfx.model_type is None and sfx.unit_type == "seconds"

    lyria = catalog.sku("lyria-3-pro-music-unit")
    assert (lyria.price_usd, lyria.model_type, lyria.unit_type, lyria.breakdown) == \
        (Decimal("0.1"), None, "generations", "Generation")

    tts = catalog.sku("tts-chatterbox-hd-tts-mchar")
    assert (tts.price_usd, tts.unit_scale, tts.model_type) == (Decimal("50"), 1_000_000, "TTS")

    assert skus_of(catalog, "text-embedding-bge-en-icl") == {
        "text-embedding-bge-en-icl-embedding-input-mtoken": Decimal("0.0125")}
    assert catalog.sku("firered-image-edit-inpaint-unit").price_usd == Decimal("0.04")
    assert skus_of(catalog, "upscaler") == {"upscaler-upscale-unit": Decimal("0.01")}
    assert skus_of(catalog, "wai-Illustrious") == {"wai-Illustrious-image-unit": Decimal("0.01")}


def test_image_priced_only_by_resolutions_takes_the_first_entry(catalog):
    # gpt-image-2: resolutions 1K 0.27, 2K 0.51, 4K 0.84 (and quality variants, which get no SKU)
    assert skus_of(catalog, "gpt-image-2") == {"gpt-image-2-image-unit": Decimal("0.27")}
    assert skus_of(catalog, "grok-imagine-image") == {"grok-imagine-image-image-unit": Decimal("0.03")}
    info = catalog.sku("gpt-image-2-image-unit")
    assert (info.model_type, info.unit_type, info.breakdown, info.unit_scale) == ("IMAGE", "images", "Generation", 1)
    # an inpaint price wins over resolutions
    assert skus_of(catalog, "nano-banana-2-edit") == {"nano-banana-2-edit-inpaint-unit": Decimal("0.1")}


def test_extended_skus(catalog):
    assert skus_of(catalog, "gemini-3-1-pro-preview") == {
        "gemini-3-1-pro-preview-llm-input-mtoken": Decimal("2.5"),
        "gemini-3-1-pro-preview-llm-input-cached-mtoken": Decimal("0.5"),
        "gemini-3-1-pro-preview-llm-cache-write-mtoken": Decimal("0.5"),
        "gemini-3-1-pro-preview-llm-output-mtoken": Decimal("15"),
        "gemini-3-1-pro-preview-llm-extended-input-mtoken": Decimal("5"),
        "gemini-3-1-pro-preview-llm-extended-input-cached-mtoken": Decimal("0.5"),
        "gemini-3-1-pro-preview-llm-extended-cache-write-mtoken": Decimal("0.5"),
        "gemini-3-1-pro-preview-llm-extended-output-mtoken": Decimal("22.5"),
    }
    assert catalog.sku("gemini-3-1-pro-preview-llm-extended-cache-write-mtoken").breakdown == "Cache Write"


# --- expand ---------------------------------------------------------------------------------------------------


def test_expand_spec_example(catalog):
    rows = catalog.expand("zai-org-glm-5-1",
                          EventQuantities(prompt_tokens=339, cached_prompt_tokens=100, completion_tokens=227))
    assert [(info.sku, units) for info, units in rows] == [
        ("zai-org-glm-5-1-llm-input-mtoken", Decimal("0.000239")),
        ("zai-org-glm-5-1-llm-input-cached-mtoken", Decimal("0.0001")),
        ("zai-org-glm-5-1-llm-output-mtoken", Decimal("0.000227")),
    ]
    assert str(rows[0][1]) == "0.000239"


def test_expand_order_with_cache_write(catalog):
    rows = expand(catalog, "claude-fable-5", completion_tokens=7, cache_write_tokens=20, cached_prompt_tokens=30,
                  prompt_tokens=100)
    assert list(rows.items()) == [
        ("claude-fable-5-llm-input-mtoken", Decimal("0.00005")),
        ("claude-fable-5-llm-input-cached-mtoken", Decimal("0.00003")),
        ("claude-fable-5-llm-cache-write-mtoken", Decimal("0.00002")),
        ("claude-fable-5-llm-output-mtoken", Decimal("0.000007")),
    ]


def test_expand_without_cache_price_charges_cached_tokens_as_input(catalog):
    assert not any("cached" in s or "cache-write" in s for s in skus_of(catalog, "e2ee-gemma-3-27b-p"))
    rows = expand(catalog, "e2ee-gemma-3-27b-p", prompt_tokens=339, cached_prompt_tokens=100,
                  cache_write_tokens=39, completion_tokens=227)
    assert rows == {"e2ee-gemma-3-27b-p-llm-input-mtoken": Decimal("0.000339"),
                    "e2ee-gemma-3-27b-p-llm-output-mtoken": Decimal("0.000227")}
    # a cache_input price but no cache_write price: only the cache-write tokens fall back to input
    rows = expand(catalog, "zai-org-glm-5-1", prompt_tokens=100, cached_prompt_tokens=10, cache_write_tokens=20)
    assert rows == {"zai-org-glm-5-1-llm-input-mtoken": Decimal("0.00009"),
                    "zai-org-glm-5-1-llm-input-cached-mtoken": Decimal("0.00001")}


def test_expand_only_cached_tokens(catalog):
    assert expand(catalog, "zai-org-glm-5-1", prompt_tokens=50, cached_prompt_tokens=50) == {
        "zai-org-glm-5-1-llm-input-cached-mtoken": Decimal("0.00005")}


def test_expand_extended_threshold(catalog):
    model = "gemini-3-1-pro-preview"  # context_token_threshold 200000
    at = expand(catalog, model, prompt_tokens=200_000, cached_prompt_tokens=1000, completion_tokens=10)
    assert at == {f"{model}-llm-input-mtoken": Decimal("0.199"),
                  f"{model}-llm-input-cached-mtoken": Decimal("0.001"),
                  f"{model}-llm-output-mtoken": Decimal("0.00001")}
    above = expand(catalog, model, prompt_tokens=200_001, cached_prompt_tokens=1000, cache_write_tokens=1,
                   completion_tokens=10)
    assert above == {f"{model}-llm-extended-input-mtoken": Decimal("0.199"),
                     f"{model}-llm-extended-input-cached-mtoken": Decimal("0.001"),
                     f"{model}-llm-extended-cache-write-mtoken": Decimal("0.000001"),
                     f"{model}-llm-extended-output-mtoken": Decimal("0.00001")}


def test_expand_extended_role_without_extended_price(catalog):
    # openai-gpt-55: extended input/output/cache_input, no cache_write at all
    model = "openai-gpt-55"
    rows = expand(catalog, model, prompt_tokens=300_000, cached_prompt_tokens=100_000, cache_write_tokens=50_000,
                  completion_tokens=1)
    assert rows == {f"{model}-llm-extended-input-mtoken": Decimal("0.2"),
                    f"{model}-llm-extended-input-cached-mtoken": Decimal("0.1"),
                    f"{model}-llm-extended-output-mtoken": Decimal("0.000001")}
    # openai-gpt-54-pro: no cache prices anywhere, so cached tokens go to the (extended) input SKU
    rows = expand(catalog, "openai-gpt-54-pro", prompt_tokens=272_001, cached_prompt_tokens=72_001)
    assert rows == {"openai-gpt-54-pro-llm-extended-input-mtoken": Decimal("0.272001")}


def test_expand_other_model_kinds(catalog):
    assert expand(catalog, "text-embedding-bge-en-icl", prompt_tokens=1234) == {
        "text-embedding-bge-en-icl-embedding-input-mtoken": Decimal("0.001234")}
    assert expand(catalog, "gpt-image-2", images=3) == {"gpt-image-2-image-unit": Decimal("3")}
    assert expand(catalog, "lyria-3-pro", images=1) == {"lyria-3-pro-music-unit": Decimal("1")}
    assert expand(catalog, "tts-chatterbox-hd", characters=1500) == {"tts-chatterbox-hd-tts-mchar": Decimal("0.0015")}
    assert expand(catalog, "elevenlabs-tts-multilingual-v2", characters=1500) == {
        "elevenlabs-tts-multilingual-v2-tts-kchar": Decimal("1.5")}
    assert expand(catalog, "elevenlabs/scribe-v2", seconds=Decimal("12.5")) == {
        "elevenlabs/scribe-v2-asr-second": Decimal("12.5")}
    assert expand(catalog, "elevenlabs-sound-effects-v2", seconds=4) == {
        "elevenlabs-sound-effects-v2-music-second": Decimal("4")}
    # zero quantities are left out, not charged and not an error
    assert expand(catalog, "gpt-image-2", images=2, prompt_tokens=0, seconds=0) == {
        "gpt-image-2-image-unit": Decimal("2")}


@pytest.mark.parametrize(("model", "quantities", "message"), [
    ("no-such-model", {"prompt_tokens": 1}, "model 'no-such-model' is not in the catalogue"),
    ("ace-step-15", {"seconds": 60}, "model 'ace-step-15' is not in the catalogue"),  # priced by durations only
    ("zai-org-glm-5-1", {"prompt_tokens": 10, "images": 1}, "model 'zai-org-glm-5-1' has no price for images"),
    ("gpt-image-2", {"prompt_tokens": 10, "images": 1}, "model 'gpt-image-2' has no price for promptTokens"),
    ("text-embedding-bge-en-icl", {"prompt_tokens": 10, "completion_tokens": 5},
     "model 'text-embedding-bge-en-icl' has no price for completionTokens"),
    ("elevenlabs/scribe-v2", {"characters": 5}, "model 'elevenlabs/scribe-v2' has no price for characters"),
    ("zai-org-glm-5-1", {}, "nothing to charge"),
    ("zai-org-glm-5-1", {"prompt_tokens": 0, "completion_tokens": 0}, "nothing to charge"),
    ("zai-org-glm-5-1", {"prompt_tokens": 100, "cached_prompt_tokens": 80, "cache_write_tokens": 30},
     "cachedPromptTokens + cacheWriteTokens (110) exceed promptTokens (100)"),
    ("zai-org-glm-5-1", {"cached_prompt_tokens": 5},
     "cachedPromptTokens + cacheWriteTokens (5) exceed promptTokens (0)"),
    ("zai-org-glm-5-1", {"completion_tokens": -1}, "completionTokens must not be negative"),
    ("elevenlabs/scribe-v2", {"seconds": Decimal("-0.5")}, "seconds must not be negative"),
    ("zai-org-glm-5-1", {"prompt_tokens": 1.5}, "promptTokens must be an integer"),
    ("elevenlabs/scribe-v2", {"seconds": 1.5}, "seconds must be a number"),
])
def test_expand_errors(catalog, model, quantities, message):
    with pytest.raises(PricingError, match="^" + re.escape(message)):
        catalog.expand(model, EventQuantities(**quantities))


# --- loading --------------------------------------------------------------------------------------------------


def test_load_by_path_equals_packaged_default(catalog):
    assert Catalog.load(PACKAGED).skus == catalog.skus
    assert Catalog.load(str(PACKAGED)).skus == catalog.skus


SKU = """
[models."m"]
name = "M"
type = "text"

[skus."m-input-mtoken"]
model = "m"
model_type = "LLM"
unit_type = "tokens"
breakdown = "Input"
unit_scale = 1000000
"""


def test_load_custom_catalogue_diem_defaults_to_usd(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(SKU + 'usd = "2"\n')
    info = Catalog.load(path).sku("m-input-mtoken")
    assert (info.price_usd, info.price_diem, info.model_name) == (Decimal("2"), Decimal("2"), "M")


@pytest.mark.parametrize(("text", "problem"), [
    (None, "cannot read"),
    ("this is = = not toml", "not valid TOML"),
    (SKU, "sku 'm-input-mtoken': missing 'usd'"),
    (SKU + "usd = 0.115\n", "must be a decimal string"),
    (SKU + 'usd = "-1"\n', "not a non-negative decimal"),
    (SKU + 'usd = "abc"\n', "not a non-negative decimal"),
    (SKU.replace("1000000", "60") + 'usd = "1"\n', "unit_scale must be 1000000 for this SKU's suffix"),
    (SKU.replace("1000000", "1000") + 'usd = "1"\n', "unit_scale must be 1000000 for this SKU's suffix"),
    (SKU + 'usd = "0.0000000001"\n', "more than 9 decimal places"),
    (SKU.replace('model = "m"', 'model = "x"') + 'usd = "1"\n', "model 'x' has no [models] entry"),
    (SKU.replace('"Input"', '"Sideways"') + 'usd = "1"\n', "matches no event quantity"),
    (SKU + 'usd = "1"\nextended = true\n', "extended SKUs need a context_token_threshold"),
    (SKU + 'usd = "1"\n' + SKU.split("\n\n")[1].replace("m-input-mtoken", "m-input2-mtoken") + 'usd = "1"\n',
     "already charges"),
    ('[models]\n[skus]\n', "at least one [skus.*] table"),
])
def test_load_errors_name_the_file_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "bad.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(CatalogError) as exc:
        Catalog.load(path)
    message = str(exc.value)
    assert message.startswith(f"catalogue {path}: ") and problem in message
    assert "\n" not in message
    assert isinstance(exc.value, ValueError)
