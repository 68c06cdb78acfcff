"""ISO 4217 currencies and prices in them (pure): which codes exist, how many decimals each has,
and an operator's price read as a Decimal that fits its currency."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Active ISO 4217 codes of money (not the metals, fund units of account or testing codes: XAU, XTS...).
ISO_4217 = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW
KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN
NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL
SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES
VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
""".split())
# Decimals (ISO 4217 minor units) where they are not 2.
MINOR_UNITS = {**dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0),
               **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3), "CLF": 4, "UYW": 4}
MAX_PRICE = Decimal("999999999999")  # migrations/0012: below 1e12


def currency_code(text: str) -> str:
    """``text`` as an ISO 4217 code (upper-cased); ValueError naming it if there is no such currency."""
    code = text.strip().upper()
    if code not in ISO_4217:
        raise ValueError(f"currency '{text}' is not an ISO 4217 code (e.g. EUR, CHF, GBP)")
    return code


def price_in(amount: str, currency: str) -> Decimal:
    """``amount`` as a Decimal price in ``currency`` (a code from currency_code): 0 or more, with no
    more decimals than the currency has. ValueError with what is wrong."""
    try:
        price = Decimal(amount.strip())
    except InvalidOperation:
        raise ValueError(f"price '{amount}' is not an amount (e.g. 120.00)") from None
    if not price.is_finite() or price < 0 or price > MAX_PRICE:
        raise ValueError(f"price '{amount}' must be an amount from 0 to {MAX_PRICE}")
    decimals = MINOR_UNITS.get(currency, 2)
    exponent = price.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if -exponent > decimals:
        raise ValueError(f"price '{amount}' has more decimals than {currency} ({decimals})")
    return abs(price).quantize(Decimal(1).scaleb(-decimals))  # abs: never "-0.00"
