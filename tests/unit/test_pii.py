"""PII detection and redaction: true positives per type, the false positives task data is full of, and
redaction placeholders/counts."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from components.clean import pii
from components.clean.pii import PII_TYPES, Finding, find_pii, redact

REPO = Path(__file__).resolve().parents[2]


def spans(text: str, **kwargs) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in find_pii(text, **kwargs)]


# --- true positives ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "john.doe@example.com",
        "a_b+tag@sub.example.co.uk",
        "X9@mail-server.io",
        "first.m.last%dept@corp.travel",
    ],
)
def test_emails_found(email):
    text = f"Write to {email}, thanks."
    assert spans(text) == [("EMAIL", email)]


def test_several_emails_in_one_text():
    text = "cc: ann@example.org;bob.smith@example.net <carol@example.de>"
    assert [s for _, s in spans(text)] == ["ann@example.org", "bob.smith@example.net", "carol@example.de"]


@pytest.mark.parametrize("text", ["@mention me", "user@localhost", "a@b", "ratio 3@4.5", "see @ 10"])
def test_not_emails(text):
    assert find_pii(text) == []


@pytest.mark.parametrize(
    ("number", "region"),
    [
        ("(650) 253-0000", "US"),  # US national
        ("650-253-0000", "US"),
        ("+1 650-253-0000", None),  # US international
        ("+1 (415) 555-2671", None),
        ("+44 20 7946 0958", None),  # UK international
        ("020 7946 0958", "GB"),  # UK national
        ("07911 123456", "GB"),  # UK mobile, national
        ("+49 30 901820", None),  # German international
        ("030 901820", "DE"),  # German national
        ("0151 23456789", "DE"),  # German mobile, national
        ("+49 151 23456789", None),
    ],
)
def test_phones_found(number, region):
    import phonenumbers

    # The fixtures themselves must be valid per libphonenumber, or the test proves nothing.
    assert phonenumbers.is_valid_number(phonenumbers.parse(number, region))
    text = f"Call me on {number} tomorrow."
    assert spans(text, region=region) == [("PHONE", number)]
    if region is None:  # international form is found whatever the region
        assert spans(text) == [("PHONE", number)]
        assert spans(text, region="DE") == [("PHONE", number)]


def test_national_phone_needs_its_region():
    # A UK national number is not a valid US number: with the default region it is not reported.
    assert pii.DEFAULT_PHONE_REGION == "US"
    assert find_pii("ring 020 7946 0958") == []
    assert find_pii("ring (650) 253-0000", region=None) == []


@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",  # Visa
        "4111-1111-1111-1111",
        "4111111111111111",
        "4242 4242 4242 4242",
        "5555 5555 5555 4444",  # Mastercard
        "5105-1051-0510-5100",
        "2223 0031 2200 3222",  # Mastercard 2-series
        "3782 822463 10005",  # Amex
        "378282246310005",
        "6011 1111 1111 1117",  # Discover
    ],
)
def test_cards_found(card):
    text = f"card: {card}, exp 12/28"
    assert spans(text) == [("CREDIT_CARD", card)]


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # fails Luhn
        "4111111111111112",
        "6666666666666",  # passes Luhn but all one digit
        "4111 1111-1111 1111",  # mixed separators
        "1234 5678 9012 3456 7890",  # longer group sequence (20 digits)
        "BK4111111111111111",  # glued to an id prefix
        "ts 1746259200000",  # 13-digit epoch millis, passes Luhn, not a card prefix
    ],
)
def test_cards_not_found(text):
    assert [f for f in find_pii(text) if f.type == "CREDIT_CARD"] == []


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91 ABNA 0417 1643 00",
        "BE68 5390 0754 7034",
        "NO93 8601 1117 947",
    ],
)
def test_ibans_found(iban):
    text = f"IBAN {iban}, thanks"
    assert spans(text) == [("IBAN", iban)]


def test_iban_stops_at_country_length():
    # A grouped Belgian IBAN (16) followed by a year must not swallow the year.
    assert spans("BE68 5390 0754 7034 2024") == [("IBAN", "BE68 5390 0754 7034")]


@pytest.mark.parametrize(
    "text",
    [
        "DE88 3704 0044 0532 0130 00",  # wrong check digits
        "DE89 3704 0044 0532 0130 01",  # altered BBAN
        "DE89 3704 0044 0532 0130",  # wrong length for DE
        "XX89 3704 0044 0532 0130 00",  # unknown country
        "de89 3704 0044 0532 0130 00",  # IBANs are printed upper case
    ],
)
def test_ibans_not_found(text):
    assert [f for f in find_pii(text) if f.type == "IBAN"] == []


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("host 192.168.1.20 is down", "192.168.1.20"),
        ("ping 8.8.8.8.", "8.8.8.8"),
        ("http://10.0.0.1:8080/api", "10.0.0.1"),
        ("ipv6 2001:db8::1 here", "2001:db8::1"),
        ("at 2001:db8::1: it failed", "2001:db8::1"),
        ("addr 2001:0db8:85a3:0000:0000:8a2e:0370:7334.", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
        ("mapped ::ffff:192.0.2.1 ok", "::ffff:192.0.2.1"),
        ("[fe80::1ff:fe23:4567:890a]", "fe80::1ff:fe23:4567:890a"),
    ],
)
def test_ip_addresses_found(text, address):
    assert spans(text) == [("IP_ADDRESS", address)]


@pytest.mark.parametrize(
    "text",
    [
        "256.1.1.1",
        "1.2.3.256",
        "192.168.01.1",  # leading zero: ambiguous octal, ipaddress rejects it
        "1.2.3.4.5",
        "version 1.2.3.4",
        "v1.2.3.4",
        "at 12:30:45",
        "mac 00:1a:2b:3c:4d:5e",
        "x[1::2] and ::1",
        "std::vector<int>",
    ],
)
def test_ip_addresses_not_found(text):
    assert [f for f in find_pii(text) if f.type == "IP_ADDRESS"] == []


# --- false positives --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Book a flight on 2026-05-03 at 14:30 for 2 people, booking BK123",
        "Arrive 2026-05-03, leave 2026-05-10",
        "2026-05-03 14:30",
        "departure at 14:30, boarding 13:55",
        "my booking is BK123 and BK98765",
        "flight LH1234 then UA 901",
        "it costs 1,299.00 EUR or $1299.99",
        "back in 2019, 2020 and 2026",
        "needs python 2.7.1 or 3.12.4",
        '[{"command":"set_slot","slot":"people","value":"2"}]',
        '[{"command":"start_flow","flow":"book_flight"},{"command":"set_slot","slot":"origin","value":"Dublin"}]',
        "order number 12345678",
        "orders 12345678, 87654321 and 11223344",
        "room 12 for 3 nights, 4 adults and 2 children",
        "",
    ],
)
def test_no_false_positives(text):
    assert find_pii(text) == []


def test_travel_dataset_has_no_findings(travel_rows):
    hits = [
        (row["id"], col, f)
        for row in travel_rows
        for col in ("prompt", "completion")
        for f in find_pii(row[col])
    ]
    assert hits == []


def test_digit_free_and_date_rows_never_call_libphonenumber(monkeypatch):
    def boom():
        raise AssertionError("phonenumbers must not be needed for this text")

    monkeypatch.setattr(pii, "_phonenumbers", boom)
    for text in (
        "I'd like to book accommodation for tomorrow",
        "Book a flight on 2026-05-03 at 14:30 for 2 people, booking BK123",
        '[{"command":"set_slot","slot":"people","value":"2"}]',
        "mail ann@example.org",
    ):
        assert all(f.type != "PHONE" for f in find_pii(text))


def test_import_is_stdlib_only():
    code = "import sys, components.clean.pii; print('phonenumbers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- overlaps, types --------------------------------------------------------------------------------


def test_card_is_not_also_a_phone():
    text = "pay with 4111 1111 1111 1111 or 5555 5555 5555 4444"
    assert [f.type for f in find_pii(text)] == ["CREDIT_CARD", "CREDIT_CARD"]
    # Asking only for phones must not turn the card numbers into phones.
    assert find_pii(text, ["PHONE"]) == []


def test_findings_sorted_and_non_overlapping():
    text = (
        "IBAN DE89 3704 0044 0532 0130 00, +49 30 901820, 10.0.0.1, a@b.io, "
        "4111 1111 1111 1111, 2001:db8::1, +44 20 7946 0958"
    )
    found = find_pii(text)
    assert [f.type for f in found] == [
        "IBAN",
        "PHONE",
        "IP_ADDRESS",
        "EMAIL",
        "CREDIT_CARD",
        "IP_ADDRESS",
        "PHONE",
    ]
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))
    for t in PII_TYPES:  # a subset of types = the full result filtered
        assert find_pii(text, [t]) == [f for f in found if f.type == t]
    assert find_pii(text, "EMAIL") == [f for f in found if f.type == "EMAIL"]


def test_unknown_type_rejected():
    with pytest.raises(ValueError, match="NAME"):
        find_pii("x", ["EMAIL", "NAME"])


def test_finding_is_frozen():
    f = Finding("EMAIL", 0, 3)
    with pytest.raises(AttributeError):
        f.start = 1  # type: ignore[misc]


# --- redaction ---------------------------------------------------------------------------------------


def test_redact_mixed():
    text = (
        "Mail jane.doe@example.com or bob@example.org, call +44 20 7946 0958, "
        "card 4111-1111-1111-1111, IBAN GB82 WEST 1234 5698 7654 32, host 192.168.1.20 / 2001:db8::1. "
        "Flight LH1234 on 2026-05-03 at 14:30."
    )
    out, counts = redact(text)
    assert out == (
        "Mail <EMAIL> or <EMAIL>, call <PHONE>, card <CREDIT_CARD>, IBAN <IBAN>, "
        "host <IP_ADDRESS> / <IP_ADDRESS>. Flight LH1234 on 2026-05-03 at 14:30."
    )
    assert counts == {"EMAIL": 2, "PHONE": 1, "CREDIT_CARD": 1, "IBAN": 1, "IP_ADDRESS": 2}


def test_redact_selected_types_only():
    out, counts = redact("a@b.io and 10.0.0.1", ["IP_ADDRESS"])
    assert (out, counts) == ("a@b.io and <IP_ADDRESS>", {"IP_ADDRESS": 1})


def test_redact_national_phone_with_region():
    assert redact("ruf an: 030 901820", region="DE") == ("ruf an: <PHONE>", {"PHONE": 1})


@pytest.mark.parametrize(
    "text", ["Book a flight on 2026-05-03 at 14:30 for 2 people, booking BK123", "", "hi"]
)
def test_redact_without_pii_returns_text_unchanged(text):
    out, counts = redact(text)
    assert out is text
    assert counts == {}
