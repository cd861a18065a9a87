from decimal import Decimal

import pytest

from usage_ledger.money import MoneyError, multiply, render, render_fixed, to_nano


@pytest.mark.parametrize("text, nano", [("0.000227", 227_000), ("2.8", 2_800_000_000), ("0.000000001", 1),
                                        ("-0.1", -100_000_000), ("0", 0), ("123456789.123456789", 123456789123456789)])
def test_to_nano_and_back_is_exact(text, nano):
    assert to_nano(Decimal(text)) == nano
    assert render(nano) == format(Decimal(text).normalize(), "f")


def test_render_never_uses_exponents_or_trailing_zeros():
    assert render(1) == "0.000000001"
    assert render(1_000_000_000_000) == "1000"
    assert render(-50_000) == "-0.00005"


@pytest.mark.parametrize("bad", ["0.0000000001", "1e400", "NaN", "Infinity", "abc"])
def test_to_nano_refuses_what_it_cannot_hold(bad):
    with pytest.raises(MoneyError):
        to_nano(bad)


def test_multiply_rounds_half_even_at_the_ninth_decimal():
    # 0.000000001 × 0.5 = 0.0000000005 → ties to even (0); 0.000000003 × 0.5 = 0.0000000015 → 0.000000002
    assert multiply(1, 500_000_000) == 0
    assert multiply(3, 500_000_000) == 2
    assert multiply(-3, 500_000_000) == -2
    units, price = Decimal("0.123456789"), Decimal("9.87654321")
    expected = (units * price).quantize(Decimal("1e-9"), rounding="ROUND_HALF_EVEN")
    assert render(multiply(to_nano(units), to_nano(price))) == format(expected, "f")


def test_render_fixed_four_places():
    assert render_fixed(10_242_449_999, 4) == "10.2424"
    assert render_fixed(0, 4) == "0.0000"
