"""PII detection and redaction for training rows (prompts and completions).

Detected types (``PII_TYPES``), each by a validating rule rather than a bare pattern so that the ordinary
numbers of task data (dates, times, prices, booking ids, flight numbers, order numbers, versions, JSON)
are not flagged:

* ``EMAIL``: ``local@domain.tld`` with a sane subset of RFC 5322 (no quoted local parts, no IP-literal
  domains, an alphabetic TLD).
* ``PHONE``: Google's libphonenumber (the maintained ``phonenumbers`` port) with ``Leniency.VALID``: a
  number is reported only if it is a valid number for its region per libphonenumber's metadata.
  Numbers written in international form (``+44 20 …``) are found whatever the region; national forms
  (``020 7946 0958``) are read in the ``region`` passed to :func:`find_pii` / :func:`redact`, by default
  ``DEFAULT_PHONE_REGION`` ("US"). Pass ``region=None`` to find international-form numbers only, or the
  dataset's country (e.g. "GB", "DE") to find its national forms.
* ``CREDIT_CARD``: 13–19 digits, unbroken or grouped by single spaces or dashes, that pass the Luhn check.
* ``IBAN``: country code + 2 check digits + BBAN, with the registry length of that country and the
  ISO 7064 mod-97 check.
* ``IP_ADDRESS``: IPv4 and IPv6 addresses, validated by :mod:`ipaddress`.

Names, postal addresses and other free-text PII are NOT detected. Doing that honestly needs a
named-entity-recognition model (presidio and spaCy both rely on separately downloaded models), which
cannot be shipped or fetched offline here; a capitalised-word heuristic would flag every city and
airline in the data while missing lower-case names, and a detector that looks like it works is worse
than none. Data that may hold names must be reviewed or scrubbed upstream with a proper NER pipeline.

Cost: this runs on every prompt and completion of datasets of millions of rows, so every detector sits
behind a cheap pre-check (a row with no digit, no ``@`` and no ``::`` returns after three C-level
scans) and libphonenumber, the only expensive step, runs only when the text holds a phone-shaped run of
at least 7 digits that is not an ISO date. Only the standard library is imported at module level;
``phonenumbers`` is imported on first use.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

PII_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS")

# Why "US": libphonenumber needs a region to read numbers written without a country code, and the
# project's default data is English. Numbers in international form are found whatever the region.
DEFAULT_PHONE_REGION = "US"

_ALL_TYPES = frozenset(PII_TYPES)

# When findings overlap, the more specific type wins: an e-mail, IBAN, card or IP address validated by
# its own checksum/structure is a stronger statement than "libphonenumber accepts these digits".
_PRIORITY = {"EMAIL": 0, "IBAN": 1, "CREDIT_CARD": 2, "IP_ADDRESS": 3, "PHONE": 4}


@dataclass(frozen=True)
class Finding:
    type: str  # one of PII_TYPES
    start: int  # character offsets in the text
    end: int


# --- pre-checks -------------------------------------------------------------------------------------

_ANY_DIGIT = re.compile(r"\d")

# --- EMAIL -----------------------------------------------------------------------------------------

# Why this subset of RFC 5322: quoted local parts and IP-literal domains do not occur in chat data,
# and allowing quotes/braces in the local part would swallow the punctuation around an address
# ('bob@x.com' would start at the quote). The TLD must be alphabetic so "v1@2.0" is not an address.
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)

# --- CREDIT_CARD -----------------------------------------------------------------------------------

# Why this shape: every major scheme prints the first group as 4 digits (Visa/Mastercard 4-4-4-4,
# Amex 4-6-5, Diners 4-6-4, 19-digit 4-4-4-4-3), so a grouped number must start with 4 digits and
# use one separator throughout; that stops the pattern gluing together unrelated numbers of a
# sentence ("room 12 for 3 nights ..."). The lookarounds keep it from matching inside longer digit
# runs, decimals, ids glued to letters (BK1234...) or a longer digit-group sequence.
# Why the first digit comes before the lookbehinds (here and in the patterns below): a pattern that
# starts with a character class lets the regex engine skip ahead to candidate characters in C; a
# leading lookbehind makes it run the full matcher at every position (2-3x slower on typical rows).
_CARD = re.compile(
    r"[0-9](?<![\w.,-][0-9])(?<![0-9]{3}[ -][0-9])"
    r"(?:[0-9]{12,18}|[0-9]{3}(?P<sep>[ -])[0-9]{3,6}(?:(?P=sep)[0-9]{3,6}){1,4})"
    r"(?![\w]|[.,-][0-9]|(?P=sep)[0-9]{3})"
)

# Why 2-6 only: Mastercard (2, 5), Amex/Diners/JCB (3), Visa (4), Discover/UnionPay/Maestro (5, 6).
# Long ids that pass Luhn by chance (1 in 10) mostly start elsewhere, e.g. millisecond epoch timestamps
# (13 digits starting with 1). Cost: UATP (1) and some national schemes (8, 9) are not detected.
_CARD_FIRST_DIGITS = frozenset("23456")

# --- IBAN ------------------------------------------------------------------------------------------

# Why a length table: the check digits alone accept 1 in 97 random strings; the exact per-country
# length is the second, independent filter. Lengths from the SWIFT IBAN registry (release 94, 2023)
# plus the countries that joined since (FK, HN, OM, SO, YE).
_IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BI": 27,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DJ": 27,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FK": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HN": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "LY": 25,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MN": 20,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NI": 28,
    "NL": 18,
    "NO": 15,
    "OM": 23,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "RU": 33,
    "SA": 24,
    "SC": 31,
    "SD": 18,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "SO": 23,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
    "YE": 30,
}

# Why upper case only: IBANs are printed in capitals (ISO 13616); accepting lower case would make every
# "ab12..." token of hashes and ids a candidate. Either unbroken or in groups of 4 after the check digits.
_IBAN = re.compile(
    r"[A-Z](?<![0-9A-Za-z][A-Z])[A-Z][0-9]{2}"
    r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)"
    r"(?![0-9A-Za-z])"
)

# --- IP_ADDRESS ------------------------------------------------------------------------------------

# Why the lookarounds: exactly four dotted parts, not glued to letters/digits/dots, so version strings
# (2.7.1, v1.2.3.4, 1.2.3.4.5), decimals and dates (2026.05.03) never match; ipaddress then checks
# each octet is 0-255 (and rejects leading zeros).
_IPV4 = re.compile(r"[0-9](?<![\w.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?!\w|\.[0-9])")

# Why: a four-part version number ("version 1.2.3.4") is a valid IPv4 address; the word right before
# it is the only cheap way to tell them apart.
_VERSION_WORD = re.compile(r"\b(?:version|ver|release|build|firmware|v)\.?\s*$", re.IGNORECASE)

# Why at least two colons: one colon is a time (14:30) or a JSON key separator ("slot":"people").
# A trailing IPv4 part is allowed (::ffff:192.0.2.1). Candidates are only shapes; ipaddress decides.
_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:(?<=:)(?:[0-9]{1,3}\.){3}[0-9]{1,3})?"
    r"(?!\w|\.[0-9])"
)
# Why a screen: the candidate pattern above cannot start with a character class, so it is slow to scan;
# every address it can accept (>= 3 groups, see _find_ipv6) contains "::" or "h:hhhh:".
_IPV6_SCREEN = re.compile(r"[0-9A-Fa-f]:[0-9A-Fa-f]{1,4}:")

# --- PHONE -----------------------------------------------------------------------------------------

# Why a pre-filter: PhoneNumberMatcher costs ~100 µs per row even when it finds nothing, so it runs
# only when the text holds a run of >= 7 digits joined by phone punctuation (libphonenumber's own
# separators: spaces, dashes, dots, slashes, brackets). A run that starts with an ISO date is skipped
# past the date ("2026-05-03 at 14:30" is not a reason to call libphonenumber; a date is never a phone).
_PHONE_SEP = r"[\s().\-/\[\]~\u2010-\u2015\u2212\u30fc\uff0d\uff0f\uff08\uff09\u00ad\u200b\u2060]"
_MIN_PHONE_DIGITS = 7
_PHONE_RUN = re.compile(rf"\d(?:{_PHONE_SEP}{{0,4}}\d){{{_MIN_PHONE_DIGITS - 1}}}")
_ISO_DATE = re.compile(
    r"(?:19|20)[0-9]{2}([-/.])(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12][0-9]|3[01])(?![-/.]?[0-9])"
)


@functools.lru_cache(maxsize=1)
def _phonenumbers():
    # Why lazy: keeps the module stdlib-only at import time (kfp component images, CLIs) and pays
    # phonenumbers' import only in processes that meet a phone-shaped digit run.
    import phonenumbers

    return phonenumbers


# --- detectors -------------------------------------------------------------------------------------


def _find_emails(text: str) -> list[Finding]:
    return [Finding("EMAIL", m.start(), m.end()) for m in _EMAIL.finditer(text)]


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _find_cards(text: str) -> list[Finding]:
    found = []
    for m in _CARD.finditer(text):
        digits = m.group().replace(" ", "").replace("-", "")
        if not 13 <= len(digits) <= 19 or digits[0] not in _CARD_FIRST_DIGITS:
            continue
        # Why: "4444 4444 4444 4444"-style strings are placeholders/test fillers, and some pass Luhn.
        if digits.count(digits[0]) == len(digits):
            continue
        if _luhn_ok(digits):
            found.append(Finding("CREDIT_CARD", m.start(), m.end()))
    return found


def _iban_mod97_ok(iban: str) -> bool:
    # ISO 7064 MOD 97-10: move the first four characters to the end, read letters as 10..35.
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _find_ibans(text: str) -> list[Finding]:
    found = []
    for m in _IBAN.finditer(text):
        raw = m.group()
        compact = raw.replace(" ", "")
        length = _IBAN_LENGTHS.get(compact[:2])
        if length is None or len(compact) < length:
            continue
        if len(compact) > length:
            # Why: the grouped pattern may run on into a following token ("BE68 5390 0754 7034 2024");
            # cut at the country's length, but only where a group ends, never inside one.
            if " " not in raw:
                continue
            cut = [i for i, ch in enumerate(raw) if ch != " "][length - 1] + 1
            if raw[cut] != " ":
                continue
            raw, compact = raw[:cut], compact[:length]
        if _iban_mod97_ok(compact):
            found.append(Finding("IBAN", m.start(), m.start() + len(raw)))
    return found


def _find_ipv4(text: str) -> list[Finding]:
    found = []
    for m in _IPV4.finditer(text):
        try:
            ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        if _VERSION_WORD.search(text, max(0, m.start() - 12), m.start()):
            continue
        found.append(Finding("IP_ADDRESS", m.start(), m.end()))
    return found


def _find_ipv6(text: str) -> list[Finding]:
    found = []
    for m in _IPV6.finditer(text):
        cand = m.group()
        # Why: the pattern may take a sentence's trailing colon ("at 2001:db8::1: it failed").
        if cand.endswith(":") and not cand.endswith("::"):
            cand = cand[:-1]
        try:
            ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        # Why >= 3 groups: "::", "::1", "fe80::1" are unspecified/loopback/link-local (nobody's
        # address), and short forms like "1::2" or "Cafe::Bad" are slicing or scope syntax in code.
        groups = sum(1 for g in cand.split(":") if g) + ("." in cand)
        if groups < 3:
            continue
        found.append(Finding("IP_ADDRESS", m.start(), m.start() + len(cand)))
    return found


def _phone_run_outside_dates(text: str, run: re.Match[str]) -> bool:
    # ``run`` is the first 7-digit run; skip past any that is an ISO date and look again.
    while run is not None:
        date = _ISO_DATE.match(text, run.start())
        if date is None:
            return True
        run = _PHONE_RUN.search(text, date.end())
    return False


def _find_phones(text: str, region: str | None) -> list[Finding]:
    pn = _phonenumbers()
    matcher = pn.PhoneNumberMatcher(text, region, leniency=pn.Leniency.VALID)
    return [Finding("PHONE", m.start, m.end) for m in matcher]


# --- public API ------------------------------------------------------------------------------------


def _wanted_types(types: Iterable[str]) -> frozenset[str]:
    if types is PII_TYPES:
        return _ALL_TYPES
    # Why: callers pass the same configured tuple for every row; validate it once.
    if isinstance(types, tuple):
        return _wanted_tuple(types)
    return _validated(frozenset((types,) if isinstance(types, str) else types))


@functools.lru_cache(maxsize=64)
def _wanted_tuple(types: tuple[str, ...]) -> frozenset[str]:
    return _validated(frozenset(types))


def _validated(wanted: frozenset[str]) -> frozenset[str]:
    # Why the str case above: a bare string is iterable too; "EMAIL" must not become {"E", "M", ...}.
    unknown = wanted - _ALL_TYPES
    if unknown:
        raise ValueError(f"unknown PII type(s) {sorted(unknown)}; choose from {list(PII_TYPES)}")
    return wanted


@functools.lru_cache(maxsize=64)
def _max_priority(wanted: frozenset[str]) -> int:
    return max((_PRIORITY[t] for t in wanted), default=-1)


def _resolve(candidates: list[Finding], wanted: frozenset[str]) -> list[Finding]:
    # Greedy by priority, then longer first: a finding is kept unless it overlaps a kept one.
    candidates.sort(key=lambda f: (_PRIORITY[f.type], f.start - f.end, f.start))
    kept: list[Finding] = []
    for f in candidates:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted((f for f in kept if f.type in wanted), key=lambda f: f.start)


def find_pii(
    text: str, types: Iterable[str] = PII_TYPES, *, region: str | None = DEFAULT_PHONE_REGION
) -> list[Finding]:
    """Non-overlapping findings sorted by start.

    ``region`` is the libphonenumber region used to read phone numbers written without a country code
    (default ``DEFAULT_PHONE_REGION`` = "US"; ``None``: international form only). Asking for a subset of
    types gives the same findings as asking for all and filtering: a more specific type (e.g. a card
    number) still suppresses a less specific one (a phone) it overlaps, even when it is not asked for.
    """
    wanted = _wanted_types(types)
    has_at = "@" in text
    has_digit = _ANY_DIGIT.search(text) is not None
    # Fast path: every detector needs a digit, except e-mail ('@') and the rare digit-free IPv6 ("::").
    if not has_digit and not has_at and "::" not in text:
        return []
    # Run the wanted detectors and every more specific one that could suppress them.
    upto = _max_priority(wanted)
    candidates: list[Finding] = []
    if has_at:
        candidates += _find_emails(text)
    if has_digit and upto >= _PRIORITY["IBAN"]:
        candidates += _find_ibans(text)
    # Why one shared screen: a grouped or unbroken card number and a phone number both contain a run
    # of 7 digits joined by phone punctuation; rows without one skip both detectors.
    run = _PHONE_RUN.search(text) if has_digit and upto >= _PRIORITY["CREDIT_CARD"] else None
    if run is not None:
        candidates += _find_cards(text)
    if upto >= _PRIORITY["IP_ADDRESS"]:
        if has_digit and "." in text:
            candidates += _find_ipv4(text)
        if "::" in text or (has_digit and _IPV6_SCREEN.search(text)):
            candidates += _find_ipv6(text)
    if run is not None and upto >= _PRIORITY["PHONE"] and _phone_run_outside_dates(text, run):
        candidates += _find_phones(text, region)
    if not candidates:
        return []
    return _resolve(candidates, wanted)


def redact(
    text: str, types: Iterable[str] = PII_TYPES, *, region: str | None = DEFAULT_PHONE_REGION
) -> tuple[str, dict[str, int]]:
    """Replace each finding by a placeholder ``<EMAIL>``, ``<PHONE>``, ``<CREDIT_CARD>``, ``<IBAN>``,
    ``<IP_ADDRESS>``; return the new text and per-type counts (only types with count > 0).

    A text without findings is returned as is (the same object) with ``{}``.
    """
    findings = find_pii(text, types, region=region)
    if not findings:
        return text, {}
    parts: list[str] = []
    counts: dict[str, int] = {}
    pos = 0
    for f in findings:
        parts.append(text[pos : f.start])
        parts.append(f"<{f.type}>")
        pos = f.end
        counts[f.type] = counts.get(f.type, 0) + 1
    parts.append(text[pos:])
    return "".join(parts), counts
