"""Travel-assistant command generation: a seeded data generator and a rule-based labeller.

The task: given a user message (and optionally the dialogue state), emit a JSON list of commands
(``start_flow``, ``set_slot``, ``cancel_flow``, ``clarify``; see ``schema.json``).

Two halves keep each other honest:

* :func:`oracle` is a deterministic, rule-based labeller. It only sees the message text and the state,
  never the generator's intent, and applies regexes and keyword tables (documented on the function).
* :func:`generate` samples a "paraphrase family" (an intent plus slot values), renders several phrasings
  of it, labels every phrasing with :func:`oracle`, and raises if the oracle disagrees with the commands
  the generator meant. A template the oracle cannot read therefore fails loudly instead of producing a
  silently wrong label.

Standard library plus components/common/example_data.py, the family loop and command line the examples share
(where slmforge is installed); the script can also be loaded straight from its file path. CLI::

    python examples/travel/travel.py [--n 3000] [--seed 7] [--out examples/travel/data/travel.jsonl] [--check]
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

from components.common.example_data import command_line, family_rows, to_jsonl  # noqa: F401 (to_jsonl: the file format)

# --------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------

FLOWS = ("book_flight", "book_hotel", "book_car", "book_table", "cancel_booking", "check_status")
# Flows that create something new; only these are clarify candidates.
BOOKING_FLOWS = ("book_flight", "book_hotel", "book_car", "book_table")

# The canonical slot order: set_slot commands are always emitted in this order.
SLOTS = (
    "city",
    "origin",
    "destination",
    "date",
    "return_date",
    "time",
    "people",
    "nights",
    "cuisine",
    "travel_class",
    "car_type",
    "booking_id",
)

# Which slots each flow uses (the schema-level description). The oracle reads all of them, and the clarify
# rule narrows its candidate flows to those whose slot set covers every slot value in the message.
FLOW_SLOTS = {
    "book_flight": ("origin", "destination", "date", "return_date", "people", "travel_class"),
    "book_hotel": ("city", "date", "nights", "people"),
    "book_car": ("city", "date", "return_date", "time", "car_type"),
    "book_table": ("city", "date", "time", "people", "cuisine"),
    "cancel_booking": ("booking_id",),
    "check_status": ("booking_id",),
}

# The slots the generator writes, per flow: FLOW_SLOTS without nights, time and return_date. A random-init
# 2-layer model trained on 2 CPU cores generalised to held-out paraphrase families markedly better without
# them (see README). The oracle still reads those slots when a user types them.
GENERATED_SLOTS = {
    "book_flight": ("origin", "destination", "date", "people", "travel_class"),
    "book_hotel": ("city", "date", "people"),
    "book_car": ("city", "date", "car_type"),
    "book_table": ("city", "date", "people", "cuisine"),
    "cancel_booking": ("booking_id",),
    "check_status": ("booking_id",),
}

# The value vocabularies are bounded on purpose: small enough that a random-init 2-layer model learns
# every value from 3,000 rows on 2 CPU cores (see README). The oracle's city, cuisine and car-type
# keyword tables are these same tuples.
# Deliberately no city whose name is also a common English word ("Nice", "Reading", "Split").
CITIES = (
    "Amsterdam",
    "Athens",
    "Berlin",
    "Dublin",
    "Lisbon",
    "London",
    "Madrid",
    "New York",
    "Paris",
    "Rome",
    "Tokyo",
    "Vienna",
)
CUISINES = ("chinese", "french", "indian", "italian", "japanese", "thai")
TRAVEL_CLASSES = ("economy", "premium_economy", "business", "first")
# No "economy" car type: it would collide with the flight class of the same name.
CAR_TYPES = ("compact", "suv", "minivan", "electric")
# Index = value, so NUMBER_WORDS[3] == "three". The oracle reads counts 1-12 (digits or words); the
# generator samples people 1-8 for a table and 1-6 otherwise.
NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Relative days are kept as these lowercase tokens rather than resolved to a calendar date. They are the
# only dates the generator writes; the oracle also reads month-name and ISO dates.
RELATIVE_DAYS = ("today", "tomorrow", *WEEKDAYS)
# Month-name dates (oracle only) carry no year in the text; they all normalise into this year.
YEAR = 2026
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
MONTH_ABBREVIATIONS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
BOOKING_ID_PREFIX = "BK"  # booking ids are "BK" + 3 digits, e.g. BK042

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "travel.jsonl"

# --------------------------------------------------------------------------------------------------------
# Oracle: patterns
# --------------------------------------------------------------------------------------------------------

_NUMBER = r"(\d{1,2}|" + "|".join(NUMBER_WORDS[1:]) + r")"
_MONTH_NUMBER = {name: i + 1 for i, name in enumerate(MONTHS)}
_MONTH_NUMBER.update({abbr: i + 1 for i, abbr in enumerate(MONTH_ABBREVIATIONS)})
_MONTH_NUMBER["sept"] = 9
# Longest first so "september" wins over "sep".
_MONTH = "(" + "|".join(sorted(_MONTH_NUMBER, key=lambda m: (-len(m), m))) + ")"
_PEOPLE_NOUN = r"(?:people|persons?|guests?|adults?|passengers?|travell?ers?|pax|of us)"

_BOOKING_ID = re.compile(r"\bbk[- ]?(\d{3})\b")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
# "Dec 3", "December 3rd", "Dec. the 3rd". The lookahead refuses a number that is really a time or a
# count ("3 Dec 4 people", "3 Dec 8pm") so that the day-month reading below gets it instead.
_MONTH_DAY = re.compile(
    rf"\b{_MONTH}\.?\s+(?:the\s+)?(\d{{1,2}})(?:st|nd|rd|th)?\b"
    rf"(?![:\d])(?!\s*(?:am\b|pm\b|a\.m\.|p\.m\.|nights?\b|{_PEOPLE_NOUN}\b))"
)
# "3 Dec", "3rd of December", "the 3rd of December".
_DAY_MONTH = re.compile(rf"\b(?:the\s+)?(\d{{1,2}})(?:st|nd|rd|th)?(?:\s+of)?\s+{_MONTH}\b\.?")
_RELATIVE_DAY = re.compile(r"\b(" + "|".join(RELATIVE_DAYS) + r")\b")
# A date is a return date when one of these cues comes at most two words before it (and after the
# previous date): "returning Dec 10", "back on Friday", "until Sunday", "drop it off on Friday".
_RETURN_CUE = re.compile(r"\b(?:return|returning|back|until|till|off)\b(?:\s+[\w']+){0,2}\s*$")

_TIME_12H = re.compile(r"\b(\d{1,2})(?::([0-5]\d))?\s*(a\.?m\.?|p\.?m\.?)(?!\w)")
_TIME_24H = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_TIME_WORD = re.compile(r"\b(noon|midday|midnight)\b")
_TIME_WORDS = {"noon": "12:00", "midday": "12:00", "midnight": "00:00"}

_NIGHTS = re.compile(rf"\b{_NUMBER}\s+nights?\b")
_PEOPLE_COUNT = re.compile(rf"\b{_NUMBER}\s+{_PEOPLE_NOUN}\b")
_PEOPLE_FOR = re.compile(rf"\b(?:for|party of|group of|we're|we are)\s+{_NUMBER}\b")

# "first" only counts together with "class" ("first class"), never on its own.
_TRAVEL_CLASS = re.compile(r"\b(premium[ -]economy|economy|business|first(?=\s+class\b))\b")
_CAR_TYPE = re.compile(r"\b(" + "|".join(CAR_TYPES) + r")\b")
_CUISINE = re.compile(r"\b(" + "|".join(CUISINES) + r")\b")
_CITY_BY_KEY = {city.lower(): city for city in CITIES}
_CITY = re.compile(
    r"\b(" + "|".join(re.escape(c) for c in sorted(_CITY_BY_KEY, key=lambda c: (-len(c), c))) + r")\b"
)
# In a flight, a city is the origin when one of these comes at most one word before it
# ("from Rome", "leaving from Rome", "change the origin to Rome"), or when it is directly followed by
# "to <city>" ("Rome to Paris"). Every other city in a flight is the destination.
_ORIGIN_CUE = re.compile(r"\b(?:from|origin|departing|leaving)\b(?:\s+[\w']+)?\s*$")

# Explicit flow requests, by keyword.
_FLOW_CUES = {
    "book_flight": re.compile(r"\b(?:flights?|fly|flying|plane|airfare)\b"),
    "book_hotel": re.compile(r"\b(?:hotels?|rooms?|accommodation|stay)\b"),
    "book_car": re.compile(r"\b(?:cars?|vehicle|rental|rent|hire)\b"),
    "book_table": re.compile(r"\b(?:tables?|restaurant|dinner|lunch|brunch)\b"),
}
_GENERIC_BOOKING = re.compile(r"\b(?:book|booking|reserve|reservation|something|arrange)\b")
_CANCEL = re.compile(r"\b(?:cancel|call off)\b")
_ABORT = re.compile(
    r"\b(?:forget (?:it|that|about it)|never ?mind|scratch that|don't bother|stop|changed my mind)\b"
)
_STATUS = re.compile(r"\b(?:status|confirmed|look up)\b|\bcheck\b(?![- ]?(?:in|out)\b)")


# --------------------------------------------------------------------------------------------------------
# Oracle: slot extraction
# --------------------------------------------------------------------------------------------------------


class _Scanner:
    """Lower-cased message text from which matched spans are blanked out, so that one number is never
    read twice (the 3 in "3 Dec" is a day, not a head count; the 8 in "8pm" is a time)."""

    def __init__(self, text: str) -> None:
        self.original = text
        self.text = text

    def take(self, pattern: re.Pattern[str], valid: Callable[[re.Match[str]], bool] = lambda m: True):
        """Return the valid matches of ``pattern`` and blank them out of the remaining text."""
        found = [m for m in pattern.finditer(self.text) if valid(m)]
        for m in found:
            self.text = self.text[: m.start()] + " " * (m.end() - m.start()) + self.text[m.end() :]
        return found


def _number_value(token: str) -> str:
    return str(int(token)) if token.isdigit() else str(NUMBER_WORDS.index(token))


def _iso(month: int, day: int, year: int = YEAR) -> str | None:
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return None


def _extract_dates(scan: _Scanner, found: dict[str, str]) -> None:
    dates: list[tuple[int, int, str]] = []  # (start, end, value)
    for m in scan.take(_ISO_DATE, lambda m: _iso(int(m[2]), int(m[3]), int(m[1])) is not None):
        dates.append((m.start(), m.end(), m[0]))
    for m in scan.take(_MONTH_DAY, lambda m: _iso(_MONTH_NUMBER[m[1]], int(m[2])) is not None):
        dates.append((m.start(), m.end(), _iso(_MONTH_NUMBER[m[1]], int(m[2]))))
    for m in scan.take(_DAY_MONTH, lambda m: _iso(_MONTH_NUMBER[m[2]], int(m[1])) is not None):
        dates.append((m.start(), m.end(), _iso(_MONTH_NUMBER[m[2]], int(m[1]))))
    for m in scan.take(_RELATIVE_DAY):
        dates.append((m.start(), m.end(), m[1]))
    previous_end = 0
    for start, end, value in sorted(dates):
        # Only look back to the previous date, so "returning Friday on Dec 3" keeps Dec 3 the outbound date.
        slot = "return_date" if _RETURN_CUE.search(scan.original[previous_end:start]) else "date"
        found.setdefault(slot, value)
        previous_end = end


def _extract_time(scan: _Scanner, found: dict[str, str]) -> None:
    times: list[tuple[int, str]] = []
    for m in scan.take(_TIME_12H, lambda m: 1 <= int(m[1]) <= 12):
        hour = int(m[1]) % 12 + (12 if m[3].startswith("p") else 0)
        times.append((m.start(), f"{hour:02d}:{m[2] or '00'}"))
    for m in scan.take(_TIME_24H):
        times.append((m.start(), f"{int(m[1]):02d}:{m[2]}"))
    for m in scan.take(_TIME_WORD):
        times.append((m.start(), _TIME_WORDS[m[1]]))
    if times:
        found.setdefault("time", min(times)[1])


def _extract_cities(scan: _Scanner, found: dict[str, str], flight: bool) -> None:
    matches = scan.take(_CITY)
    for i, m in enumerate(matches):
        city = _CITY_BY_KEY[m[1]]
        if not flight:
            found.setdefault("city", city)
            continue
        between = scan.original[matches[i - 1].end() if i else 0 : m.start()]
        followed_by_to = i + 1 < len(matches) and re.fullmatch(
            r"\s+to\s+", scan.original[m.end() : matches[i + 1].start()]
        )
        slot = "origin" if _ORIGIN_CUE.search(between) or followed_by_to else "destination"
        found.setdefault(slot, city)


def _extract_slots(low: str, context: str | None) -> dict[str, str]:
    """All slot values in ``low`` (the lower-cased message); ``context`` is the flow they belong to.

    Extraction order matters because each step blanks what it matched: booking ids, then dates, times,
    nights, head counts, and finally the vocabulary words. The first value found for a slot wins.
    """
    scan = _Scanner(low)
    found: dict[str, str] = {}
    for m in scan.take(_BOOKING_ID):
        found.setdefault("booking_id", BOOKING_ID_PREFIX + m[1])
    _extract_dates(scan, found)
    _extract_time(scan, found)
    for m in scan.take(_NIGHTS):
        found.setdefault("nights", _number_value(m[1]))
    people = sorted(
        (m.start(), _number_value(m[1])) for m in scan.take(_PEOPLE_COUNT) + scan.take(_PEOPLE_FOR)
    )
    if people:
        found.setdefault("people", people[0][1])
    for m in scan.take(_TRAVEL_CLASS):
        found.setdefault("travel_class", m[1].replace("-", "_").replace(" ", "_"))
    for m in scan.take(_CAR_TYPE):
        found.setdefault("car_type", m[1])
    for m in scan.take(_CUISINE):
        found.setdefault("cuisine", m[1])
    _extract_cities(scan, found, flight=context == "book_flight")
    return found


def _set_slots(found: dict[str, str]) -> list[dict]:
    return [{"command": "set_slot", "slot": slot, "value": found[slot]} for slot in SLOTS if slot in found]


def _start(flow: str, low: str) -> list[dict]:
    return [{"command": "start_flow", "flow": flow}, *_set_slots(_extract_slots(low, flow))]


def clarify_candidates(slots: dict[str, str] | list[str]) -> list[str]:
    """Booking flows (in FLOWS order) whose slot set covers every given slot name."""
    names = list(slots)
    return [flow for flow in BOOKING_FLOWS if all(name in FLOW_SLOTS[flow] for name in names)]


def oracle(message: str, state: dict | None = None) -> list[dict]:
    """Label ``message`` with commands by fixed rules; ``state`` is ``{"flow": ..., "slots": {...}}``.

    Rules, first match wins:

    1. Cancelling (``cancel``/``call off``, or "forget it", "never mind", "scratch that", "stop",
       "don't bother", "changed my mind"):
       a. ``cancel`` with a booking id (``BK`` + 3 digits) -> start ``cancel_booking`` with the id;
       b. with an active flow: if the message also gives slot values it is a correction
          ("scratch that, make it 6 people") -> ``set_slot`` only; otherwise -> ``cancel_flow``;
       c. ``cancel`` without an active flow -> start ``cancel_booking`` (an existing booking);
       d. "never mind" with nothing active -> ``[]`` (nothing to cancel).
    2. ``status``/``confirmed``/``check``/``look up`` -> start ``check_status`` (+ booking id).
    3. Exactly one booking flow named by keyword (flight/fly, hotel/room/stay, car/rent/hire,
       table/restaurant/dinner) and it is not the active flow -> ``start_flow`` then its slots.
       Two or more named -> ``clarify`` with those flows, then the slots.
    4. An active flow -> ``set_slot`` for each value in the message (naming the active flow again,
       "change the car to an SUV", is still a follow-up).
    5. Otherwise a generic booking word (book, reserve, reservation, something, arrange) or any slot
       value -> the candidates are the booking flows whose slots cover every value found: two or more
       -> ``clarify`` them; exactly one -> start it; none -> ``clarify`` all four.
    6. Nothing recognised -> ``[]``.

    ``set_slot`` commands always follow SLOTS order, one per slot (the first value in the text wins).
    Values are normalised: number words -> digits, month-name dates -> ISO in 2026, relative days ->
    lowercase tokens, times -> 24h "HH:MM" (a bare "7:30" is read as 24h), vocabulary words -> canonical
    spelling. Cities are ``origin``/``destination`` only inside a flight; elsewhere they are ``city``.
    """
    active = (state or {}).get("flow")
    low = message.lower()
    named = [flow for flow in BOOKING_FLOWS if _FLOW_CUES[flow].search(low)]

    cancel, abort = _CANCEL.search(low), _ABORT.search(low)
    if cancel or abort:
        if cancel and _BOOKING_ID.search(low):
            return _start("cancel_booking", low)
        if active:
            found = _extract_slots(low, active)
            return _set_slots(found) if found else [{"command": "cancel_flow"}]
        return _start("cancel_booking", low) if cancel else []

    if _STATUS.search(low):
        return _start("check_status", low)

    if len(named) == 1 and named[0] != active:
        return _start(named[0], low)
    if len(named) >= 2:
        return [{"command": "clarify", "flows": named}, *_set_slots(_extract_slots(low, None))]

    if active:
        return _set_slots(_extract_slots(low, active))

    found = _extract_slots(low, None)
    if not (_GENERIC_BOOKING.search(low) or found):
        return []
    candidates = clarify_candidates(found)
    if len(candidates) == 1:
        return _start(candidates[0], low)
    return [{"command": "clarify", "flows": candidates or list(BOOKING_FLOWS)}, *_set_slots(found)]


def render_prompt(message: str, state: dict | None) -> str:
    """The text the model sees.

    Without state (``None``, or no flow and no slots) it is the message alone. With state it is one line
    ``[state] flow=<flow>; <slot>=<value>; ...`` (slots in SLOTS order; unknown slot names are left out;
    a missing flow is written ``none``), a newline, then the message. Fields are separated by ``"; "`` and
    no flow, slot name or value contains ``;`` or ``=``, so values with spaces ("New York") stay readable.
    """
    if not state or (not state.get("flow") and not state.get("slots")):
        return message
    slots = state.get("slots") or {}
    fields = [f"flow={state.get('flow') or 'none'}"] + [f"{s}={slots[s]}" for s in SLOTS if s in slots]
    return "[state] " + "; ".join(fields) + "\n" + message


def parse_prompt(prompt: str) -> tuple[str, dict | None]:
    """``render_prompt``'s inverse: (message, state), state None when the prompt has no state line."""
    if not prompt.startswith("[state] "):
        return prompt, None
    head, _, message = prompt.partition("\n")
    fields = dict(part.split("=", 1) for part in head.removeprefix("[state] ").split("; ") if "=" in part)
    flow = fields.pop("flow", "none")
    return message, {"flow": None if flow == "none" else flow, "slots": fields}


def label_row(row: dict) -> list[dict]:
    """The oracle as a labeller of canonical rows, for teacher augmentation
    (``data.augment.oracle: examples.travel.travel:label_row``)."""
    message, state = parse_prompt(row["prompt"])
    return oracle(message, state)


# --------------------------------------------------------------------------------------------------------
# Generator: sampling values
# --------------------------------------------------------------------------------------------------------

# Relative weights of the slots a new request mentions, per flow (keys: GENERATED_SLOTS[flow]).
_NEW_SLOT_WEIGHTS = {
    "book_flight": {"origin": 7, "destination": 10, "date": 7, "people": 4, "travel_class": 3},
    "book_hotel": {"city": 10, "date": 7, "people": 5},
    "book_car": {"city": 10, "date": 7, "car_type": 5},
    "book_table": {"city": 7, "date": 6, "people": 8, "cuisine": 5},
}


def _weighted_sample(rng: random.Random, weights: dict[str, int], k: int) -> list[str]:
    """``k`` distinct keys of ``weights`` drawn without replacement (dict order is deterministic)."""
    pool = list(weights)
    chosen = []
    for _ in range(min(k, len(pool))):
        pick = rng.choices(pool, weights=[weights[p] for p in pool])[0]
        chosen.append(pick)
        pool.remove(pick)
    return chosen


def _sample_values(rng: random.Random, flow: str, slots: list[str]) -> dict[str, str]:
    """Values for ``slots`` (from GENERATED_SLOTS) of ``flow``, returned in SLOTS order.

    Dates are relative days only.
    """
    values: dict[str, str] = {}
    for slot in SLOTS:
        if slot not in slots:
            continue
        if slot in ("city", "origin", "destination"):
            values[slot] = rng.choice([c for c in CITIES if c not in values.values()])
        elif slot == "date":
            values[slot] = rng.choice(RELATIVE_DAYS)
        elif slot == "people":
            top = 8 if flow == "book_table" else 6
            values[slot] = str(
                rng.choices(range(1, top + 1), weights=[3 if n <= 4 else 1 for n in range(1, top + 1)])[0]
            )
        elif slot == "cuisine":
            values[slot] = rng.choice(CUISINES)
        elif slot == "travel_class":
            values[slot] = rng.choice(TRAVEL_CLASSES)
        elif slot == "car_type":
            values[slot] = rng.choice(CAR_TYPES)
        elif slot == "booking_id":
            values[slot] = f"{BOOKING_ID_PREFIX}{rng.randrange(1000):03d}"
        else:
            raise ValueError(f"the generator does not sample slot {slot!r}")
    return values


def _sample_state(rng: random.Random, flow: str, min_slots: int = 0) -> dict:
    """A plausible dialogue state: ``flow`` active with 0-3 (at least ``min_slots``) slots filled."""
    k = rng.randint(min_slots, 3)
    names = _weighted_sample(rng, {s: 1 for s in GENERATED_SLOTS[flow]}, k)
    return {"flow": flow, "slots": _sample_values(rng, flow, names)}


# --------------------------------------------------------------------------------------------------------
# Generator: saying values
# --------------------------------------------------------------------------------------------------------


def _an(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" or word.lower() == "suv" else "a"


def _say_number(rng: random.Random, value: str) -> str:
    return value if rng.random() < 0.6 else NUMBER_WORDS[int(value)]


def _say_city(rng: random.Random, city: str) -> str:
    return city.lower() if rng.random() < 0.15 else city


def _say_cuisine(rng: random.Random, cuisine: str) -> str:
    return cuisine.capitalize() if rng.random() < 0.7 else cuisine


def _say_car(rng: random.Random, car_type: str, article: bool = True) -> str:
    word = "SUV" if car_type == "suv" else car_type
    return f"{_an(word)} {word}" if article else word


def _say_class(rng: random.Random, travel_class: str) -> str:
    options = {
        "economy": ["economy", "economy class"],
        "premium_economy": ["premium economy", "premium economy class"],
        "business": ["business", "business class"],
        "first": ["first class"],  # bare "first" is never read as a class
    }
    return rng.choice(options[travel_class])


def _say_date(rng: random.Random, value: str) -> str:
    """The relative day alone, no preposition: "today", "Friday", "friday", "this Friday"."""
    if value in ("today", "tomorrow"):
        return value
    day = value.capitalize() if rng.random() < 0.8 else value
    return rng.choice([day, day, f"this {day}"])


def _say_date_phrase(rng: random.Random, value: str) -> str:
    """The date with a preposition where English wants one: "on Friday", "for Friday", "tomorrow"."""
    said = _say_date(rng, value)
    if value in ("today", "tomorrow"):
        return rng.choice([said, said, f"for {said}"])
    if said.startswith("this "):
        return said
    return rng.choice([f"on {said}", f"on {said}", f"for {said}"])


def _say_people(rng: random.Random, value: str, flow: str | None) -> str:
    n = _say_number(rng, value)
    one = value == "1"
    nouns = {
        "book_flight": ["passenger", "adult", "person"],
        "book_hotel": ["guest", "adult", "person"],
        "book_table": ["person", "guest"],
    }.get(flow or "", ["person"])
    noun = rng.choice(nouns)
    noun = noun if one else ("people" if noun == "person" else noun + "s")
    forms = [f"for {n} {noun}", f"{n} {noun}", f"for {n}"]
    if flow == "book_table" and not one:
        forms.append(f"party of {n}")
    return rng.choice(forms)


# --------------------------------------------------------------------------------------------------------
# Generator: phrasings per intent
# --------------------------------------------------------------------------------------------------------

_OPENERS = {
    "book_flight": [
        "Book a flight",
        "I need a flight",
        "Find me a flight",
        "I want to fly",
        "Can you book me a flight",
        "Get me plane tickets",
        "Flight",
        "I'd like to book a flight",
        "Looking for a flight",
        "Please book me a flight",
    ],
    "book_hotel": [
        "Book a hotel",
        "I need a hotel room",
        "Find me a hotel",
        "Can you reserve a room",
        "Hotel",
        "I'd like to book accommodation",
        "I need somewhere to stay",
        "Please book me a room",
        "Looking for a hotel",
    ],
    "book_car": [
        "Rent a car",
        "I need a rental car",
        "Book a car",
        "Can you get me a car",
        "Car rental",
        "I'd like to hire a car",
        "Please reserve a car",
        "Looking for a rental car",
    ],
    "book_table": [
        "Book a table",
        "I'd like to reserve a table",
        "Can you get me a table",
        "Table",
        "I need a restaurant reservation",
        "Find me a restaurant",
        "Book dinner",
        "Reserve a table",
        "Please book a table",
    ],
}
# Openers that carry the car type or cuisine themselves ({x} is "an SUV" / "Italian").
_CAR_TYPE_OPENERS = ["Rent {x}", "I need {x} rental", "Book {x} car", "I'd like to hire {x}"]
_CUISINE_OPENERS = ["Book a table at {an} {x} restaurant", "Find me {an} {x} restaurant", "{X} dinner"]
_GREETINGS = ["", "", "", "", "Hi, ", "Hello, ", "Hey, "]
_ENDINGS = ["", "", ".", " please", ", thanks", "!"]


def _finish(rng: random.Random, opener: str, phrases: list[str], terse: bool = False) -> str:
    """Greeting + opener + phrases + ending; questions ("Can you ...") end with a question mark."""
    greeting = "" if terse else rng.choice(_GREETINGS)
    if greeting and not re.match(r"I\b", opener):  # keep "I" / "I'd" capitalised
        opener = opener[0].lower() + opener[1:]
    joiner = ", " if terse or rng.random() < 0.2 else " "
    body = joiner.join([opener, *phrases]) if phrases else opener
    if opener.lower().startswith("can you"):
        ending = rng.choice(["?", " please?", "?"])
    else:
        ending = rng.choice(_ENDINGS)
    if "please" in body.lower():  # one "please" is enough
        ending = ending.replace(" please", "")
    return greeting + body + ending


def _new_request_phrase(rng: random.Random, flow: str, slot: str, value: str) -> str:
    if slot == "city":
        city = _say_city(rng, value)
        return f"in {city}"
    if slot == "origin":
        city = _say_city(rng, value)
        return rng.choice([f"from {city}", f"from {city}", f"leaving from {city}", f"departing {city}"])
    if slot == "destination":
        return f"to {_say_city(rng, value)}"
    if slot == "date":
        return _say_date_phrase(rng, value)
    if slot == "people":
        return _say_people(rng, value, flow)
    if slot == "cuisine":
        cuisine = _say_cuisine(rng, value)
        return rng.choice([f"for {cuisine} food", f"{cuisine} food", f"somewhere {cuisine}"])
    if slot == "travel_class":
        said = _say_class(rng, value)
        return rng.choice([f"in {said}", said, f"{said} please"])
    if slot == "car_type":
        car = _say_car(rng, value)
        return rng.choice([f"preferably {car}", f"{car} if possible"])
    raise ValueError(f"no phrase for slot {slot!r}")


def _say_new_request(rng: random.Random, flow: str, values: dict[str, str]) -> str:
    remaining = dict(values)
    opener = rng.choice(_OPENERS[flow])
    if flow == "book_car" and "car_type" in remaining and rng.random() < 0.6:
        opener = rng.choice(_CAR_TYPE_OPENERS).format(x=_say_car(rng, remaining.pop("car_type")))
    if flow == "book_table" and "cuisine" in remaining and rng.random() < 0.5:
        cuisine = _say_cuisine(rng, remaining.pop("cuisine"))
        opener = rng.choice(_CUISINE_OPENERS).format(an=_an(cuisine), x=cuisine, X=cuisine.capitalize())
    phrases = []
    if "origin" in remaining and "destination" in remaining and rng.random() < 0.25:
        # Terse "Rome to Paris": the oracle reads a city followed by "to <city>" as the origin.
        origin, destination = remaining.pop("origin"), remaining.pop("destination")
        phrases.append(f"{_say_city(rng, origin)} to {_say_city(rng, destination)}")
    phrases += [_new_request_phrase(rng, flow, slot, value) for slot, value in remaining.items()]
    rng.shuffle(phrases)
    terse = opener in ("Flight", "Hotel", "Table", "Car rental") and rng.random() < 0.5
    return _finish(rng, opener, phrases, terse=terse)


_FOLLOW_UP_PREFIXES = ["", "", "", "Actually, ", "Sorry, ", "Oh, ", "Scratch that, ", "Hmm, ", "Wait, "]
_FOLLOW_UP_ENDINGS = ["", "", ".", " please", " instead", "!"]


def _follow_up_phrase(rng: random.Random, flow: str, slot: str, value: str) -> str:
    """How a user changes or adds one slot of the active flow, without naming another flow."""
    if slot in ("city", "origin", "destination"):
        city = _say_city(rng, value)
        return rng.choice(
            {
                "city": [
                    f"change the city to {city}",
                    f"make it {city}",
                    f"in {city} instead",
                    f"let's do {city}",
                ],
                "origin": [f"change the origin to {city}", f"leaving from {city}", f"from {city} instead"],
                "destination": [
                    f"change the destination to {city}",
                    f"fly to {city} instead",
                    f"make it {city}",
                ],
            }[slot]
        )
    if slot == "date":
        bare = _say_date(rng, value)
        return rng.choice([f"move it to {bare}", f"change the date to {bare}", f"make it {bare}"])
    if slot == "people":
        n = _say_number(rng, value)
        noun = rng.choice(["person", "guest"] if value == "1" else ["people", "guests"])
        return rng.choice(
            [f"make it {n} {noun}", f"change it to {n} {noun}", f"we're {n} now", f"{n} {noun} now"]
        )
    if slot == "cuisine":
        cuisine = _say_cuisine(rng, value)
        return rng.choice(
            [f"make it {cuisine}", f"{cuisine} food instead", f"change the cuisine to {cuisine}"]
        )
    if slot == "travel_class":
        said = _say_class(rng, value)
        return rng.choice([f"make it {said}", f"switch to {said}", f"change the class to {said}"])
    if slot == "car_type":
        car = _say_car(rng, value)
        return rng.choice([f"make it {car}", f"switch to {car}", f"change the car to {car}"])
    raise ValueError(f"no follow-up phrase for slot {slot!r}")


def _say_follow_up(rng: random.Random, flow: str, values: dict[str, str]) -> str:
    phrases = [_follow_up_phrase(rng, flow, slot, value) for slot, value in values.items()]
    rng.shuffle(phrases)
    prefix = rng.choice(_FOLLOW_UP_PREFIXES)
    body = rng.choice([" and ", ", "]).join(phrases)
    body = body[0].lower() + body[1:] if prefix else body[0].upper() + body[1:]
    return prefix + body + rng.choice(_FOLLOW_UP_ENDINGS)


_ABORT_MESSAGES = [
    "Forget it",
    "Never mind",
    "Nevermind",
    "Cancel that",
    "Scratch that",
    "Cancel it",
    "Stop",
    "Don't bother",
    "I changed my mind",
    "Cancel",
    "Forget about it",
    "Cancel this",
    "Please stop",
]
_ABORT_PREFIXES = ["", "", "", "Actually, ", "Hmm, ", "Sorry, ", "No, ", "Oh, "]
_ABORT_ENDINGS = ["", "", ".", "!", ", thanks"]


def _say_abort(rng: random.Random) -> str:
    prefix, message = rng.choice(_ABORT_PREFIXES), rng.choice(_ABORT_MESSAGES)
    if prefix and not message.startswith("I "):
        message = message[0].lower() + message[1:]
    return prefix + message + rng.choice(_ABORT_ENDINGS)


_CANCEL_BOOKING_WITH_ID = [
    "Cancel my booking {id}",
    "Please cancel reservation {id}",
    "I want to cancel {id}",
    "cancel {id}",
    "Can you cancel booking {id}?",
    "I need to cancel booking {id}",
    "Cancel {id} please",
    "{id}: please cancel it",
    "Please call off booking {id}",
    "Cancel my reservation {id}",
]
_CANCEL_BOOKING_WITHOUT_ID = [
    "I need to cancel a booking",
    "Cancel my reservation",
    "I want to cancel my booking",
    "How do I cancel a reservation?",
    "Please cancel my booking",
    "Cancel a booking",
]
_STATUS_WITH_ID = [
    "What's the status of {id}?",
    "Check booking {id}",
    "Is {id} confirmed?",
    "Look up reservation {id}",
    "Status of my booking {id} please",
    "Can you check on {id}?",
    "check {id}",
    "Is my booking {id} confirmed?",
    "What is the status of reservation {id}?",
]
_STATUS_WITHOUT_ID = [
    "What's the status of my booking?",
    "Can you check on my reservation?",
    "Is my booking confirmed?",
    "Check my booking status",
    "Look up my reservation",
]


def _say_with_id(rng: random.Random, templates: list[str], booking_id: str | None) -> str:
    template = rng.choice(templates)
    if booking_id is None:
        return template
    said = booking_id.lower() if rng.random() < 0.2 else booking_id
    message = template.format(id=said)
    if message[0].islower() and not message.startswith("bk") and rng.random() < 0.5:
        message = message[0].upper() + message[1:]
    return message


_CLARIFY_OPENERS = [
    "I need to book something",
    "Can you make a reservation",
    "Book something",
    "I'd like to reserve something",
    "I want to make a booking",
    "Help me book something",
    "Please arrange something",
    "I need a reservation",
]
_FLOW_NOUNS = {
    "book_flight": ["a flight", "flights"],
    "book_hotel": ["a hotel", "a room"],
    "book_car": ["a car", "a rental car"],
    "book_table": ["a table", "a restaurant"],
}
_EITHER_OPENERS = [
    "I need {a} or {b}",
    "Should I book {a} or {b}",
    "Not sure if I want {a} or {b}",
    "Either {a} or {b}",
    "Book {a} or {b}",
]


def _clarify_phrase(rng: random.Random, slot: str, value: str) -> str:
    if slot == "people":
        n = _say_number(rng, value)
        noun = "person" if value == "1" else "people"
        return rng.choice([f"for {n} {noun}", f"for {n}"])
    if slot == "city":
        return f"in {_say_city(rng, value)}"
    return _say_date_phrase(rng, value)


def _say_clarify(rng: random.Random, either: list[str] | None, values: dict[str, str]) -> str:
    if either:
        a, b = (rng.choice(_FLOW_NOUNS[flow]) for flow in rng.sample(either, 2))
        opener = rng.choice(_EITHER_OPENERS).format(a=a, b=b)
    else:
        opener = rng.choice(_CLARIFY_OPENERS)
    phrases = [_clarify_phrase(rng, slot, value) for slot, value in values.items()]
    rng.shuffle(phrases)
    message = " ".join([opener, *phrases])
    return message + ("?" if opener.startswith(("Can you", "Should I")) else rng.choice(["", ".", " please"]))


# --------------------------------------------------------------------------------------------------------
# Generator: families and rows
# --------------------------------------------------------------------------------------------------------


class _Family:
    """One paraphrase family: what the user means (intent, state, commands) and a way to say it.

    A plain class rather than a dataclass: ``@dataclass`` looks the module up in ``sys.modules``, which a
    bare ``spec_from_file_location`` load does not populate.
    """

    __slots__ = ("commands", "intent", "say", "state")

    def __init__(
        self, intent: str, state: dict | None, commands: list[dict], say: Callable[[random.Random], str]
    ) -> None:
        self.intent, self.state, self.commands, self.say = intent, state, commands, say


# Intent mix by family (each family yields 2-3 rows, so row shares follow these closely).
_INTENT_WEIGHTS = {
    "book_flight": 18,
    "book_hotel": 17,
    "book_car": 17,
    "book_table": 18,
    "follow_up": 15,
    "cancel_flow": 5,
    "clarify": 5,
    "cancel_booking": 3,
    "check_status": 3,
}
# Clarify slot combinations (from date/people/city) that leave at least two candidate flows.
_CLARIFY_SLOT_SETS = [
    combo
    for combo in (
        (),
        ("date",),
        ("people",),
        ("city",),
        ("city", "date"),
        ("date", "people"),
        ("city", "people"),
        ("city", "date", "people"),
    )
    if len(clarify_candidates(combo)) >= 2
]


def _slot_commands(values: dict[str, str]) -> list[dict]:
    return [{"command": "set_slot", "slot": slot, "value": values[slot]} for slot in SLOTS if slot in values]


def _sample_family(rng: random.Random) -> _Family:
    intent = rng.choices(list(_INTENT_WEIGHTS), weights=list(_INTENT_WEIGHTS.values()))[0]

    if intent in BOOKING_FLOWS:
        k = rng.choices([0, 1, 2, 3, 4], weights=[4, 24, 34, 26, 12])[0]
        names = _weighted_sample(rng, _NEW_SLOT_WEIGHTS[intent], k)
        values = _sample_values(rng, intent, names)
        # Sometimes another flow is already active: an explicit new request still starts the new flow.
        state = None
        if rng.random() < 0.1:
            state = _sample_state(rng, rng.choice([f for f in BOOKING_FLOWS if f != intent]))
        commands = [{"command": "start_flow", "flow": intent}, *_slot_commands(values)]
        return _Family(intent, state, commands, lambda r: _say_new_request(r, intent, values))

    if intent == "follow_up":
        flow = rng.choice(BOOKING_FLOWS)
        state = _sample_state(rng, flow, min_slots=1)
        names = _weighted_sample(
            rng, {s: 1 for s in GENERATED_SLOTS[flow]}, rng.choices([1, 2], weights=[3, 1])[0]
        )
        values = _sample_values(rng, flow, names)
        taken = list(state["slots"].values())
        for slot in values:  # a change must actually change something (and not reuse a city in the state)
            while values[slot] == state["slots"].get(slot) or (
                slot in ("city", "origin", "destination") and values[slot] in taken
            ):
                values[slot] = _sample_values(rng, flow, [slot])[slot]
        return _Family(intent, state, _slot_commands(values), lambda r: _say_follow_up(r, flow, values))

    if intent == "cancel_flow":
        state = _sample_state(rng, rng.choice(BOOKING_FLOWS), min_slots=1)
        return _Family(intent, state, [{"command": "cancel_flow"}], _say_abort)

    if intent == "clarify":
        either = sorted(rng.sample(BOOKING_FLOWS, 2), key=FLOWS.index) if rng.random() < 0.35 else None
        if either:
            names = _weighted_sample(rng, {"date": 2, "people": 1}, rng.choice([0, 1, 1, 2]))
        else:
            names = list(rng.choice(_CLARIFY_SLOT_SETS))
        values = _sample_values(rng, "book_table", names)  # table covers date/people/city
        flows = either or clarify_candidates(values)
        commands = [{"command": "clarify", "flows": flows}, *_slot_commands(values)]
        return _Family(intent, None, commands, lambda r: _say_clarify(r, either, values))

    # cancel_booking / check_status
    with_id = rng.random() < 0.85
    booking_id = _sample_values(rng, intent, ["booking_id"])["booking_id"] if with_id else None
    # With an active flow and no id, "cancel" would mean cancel_flow, so only id-carrying turns get a state.
    state = _sample_state(rng, rng.choice(BOOKING_FLOWS)) if with_id and rng.random() < 0.2 else None
    templates = {
        ("cancel_booking", True): _CANCEL_BOOKING_WITH_ID,
        ("cancel_booking", False): _CANCEL_BOOKING_WITHOUT_ID,
        ("check_status", True): _STATUS_WITH_ID,
        ("check_status", False): _STATUS_WITHOUT_ID,
    }[(intent, with_id)]
    commands = [{"command": "start_flow", "flow": intent}]
    if booking_id:
        commands.append({"command": "set_slot", "slot": "booking_id", "value": booking_id})
    return _Family(intent, state, commands, lambda r: _say_with_id(r, templates, booking_id))


def _completion(commands: list[dict]) -> str:
    return json.dumps(commands, separators=(",", ":"), ensure_ascii=False)


def _say_prompt(rng: random.Random, family: _Family) -> tuple[str, str]:
    """One phrasing of ``family``: the message (what the oracle reads) and the prompt (the row's text,
    the message under the state line)."""
    message = family.say(rng)
    return message, render_prompt(message, family.state)


def _label(family: _Family, said: tuple[str, str]) -> dict[str, str]:
    """The row's completion (the oracle's commands, which must be the ones the generator meant) and
    intent."""
    message = said[0]
    labelled = oracle(message, family.state)
    if labelled != family.commands:
        raise RuntimeError(
            f"oracle disagrees with generator for {message!r} (state {family.state}):\n"
            f"  oracle:   {_completion(labelled)}\n  intended: {_completion(family.commands)}"
        )
    return {"completion": _completion(labelled), "intent": family.intent}


def generate(n: int = 3000, seed: int = 7) -> list[dict]:
    """``n`` labelled rows from ``random.Random(seed)``; see the module docstring.

    Rows come in paraphrase families of 2-3 (sharing ``group``); no prompt appears twice in the output.
    Raises ``RuntimeError`` if the oracle's label for any phrasing differs from the generator's intent.
    """
    return family_rows(
        "travel", n, seed, sample=_sample_family, say=_say_prompt, label=_label, prompt=lambda said: said[1]
    )


main = command_line(generate, DEFAULT_OUT, "Generate (or --check) the travel command-generation data.")

if __name__ == "__main__":
    sys.exit(main())
