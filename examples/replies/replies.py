"""Booking replies: a seeded data generator for a free-generation task, and a rule-based reader of notes.

The task: turn a short structured booking note, as staff or a booking system would write it, into the
one-sentence message the customer receives::

    Confirm: hotel Lisbon 3 nights from 12 May  ->  Your 3-night stay in Lisbon from 12 May is confirmed.
    flt Rome > Paris | May 14 | moved           ->  Your flight from Rome to Paris has been moved to 14 May.

The reply is a fixed template of the note's facts (``reply``), so there is exactly one right answer and
a small model can learn it; the notes vary the wording, the order, the separators and the way each value
is written (``three nights``/``3n``/``3 nts``, ``May 12``/``12th May``/``12 Sep``, ``4 pax``/``party of four``).

Two halves keep each other honest, as in examples/travel/travel.py:

* :func:`read_note` is a deterministic, regex-based reader: it only sees the note text and returns the
  booking facts (kind, action and values), from which :func:`reply` writes the sentence.
* :func:`generate` samples a "paraphrase family" (one booking: kind, action, values), writes 2-3 different
  notes of it, and raises if :func:`read_note` reads any of them differently from what it meant. A note
  format the reader cannot read therefore fails loudly instead of producing a wrong target.

Standard library plus components/common/example_data.py, the family loop and command line the examples share
(where slmforge is installed); the script can also be loaded straight from its file path. CLI::

    python examples/replies/replies.py [--n 1500] [--seed 7] [--out examples/replies/data/replies.jsonl] [--check]
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

from components.common.example_data import command_line, family_rows, to_jsonl  # noqa: F401 (to_jsonl: the file format)

# --------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------

KINDS = ("hotel", "flight", "car", "table")
ACTIONS = ("confirm", "cancel", "move", "pending")
# The values each kind carries, for every action but "move"; a move carries KIND_MOVE_SLOTS.
KIND_SLOTS = {
    "hotel": ("city", "count", "date"),  # count = nights
    "flight": ("origin", "destination", "date"),
    "car": ("city", "count", "car_type", "date"),  # count = days
    "table": ("city", "count", "date"),  # count = people
}
KIND_MOVE_SLOTS = {
    "hotel": ("city", "date"),
    "flight": ("origin", "destination", "date"),
    "car": ("city", "date"),
    "table": ("city", "date"),
}
CITIES = (
    "Amsterdam",
    "Athens",
    "Berlin",
    "Dublin",
    "Lisbon",
    "London",
    "Madrid",
    "Oslo",
    "Paris",
    "Prague",
    "Rome",
    "Vienna",
)
CAR_TYPES = ("compact", "electric", "estate", "SUV")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_COUNT = 8  # nights, days and people are 1-8
MAX_DAY = 28  # every month has days 1-28

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "replies.jsonl"

# --------------------------------------------------------------------------------------------------------
# The reply
# --------------------------------------------------------------------------------------------------------

_STATUS = {"confirm": "is confirmed.", "cancel": "has been cancelled.", "pending": "is pending confirmation."}
# kind -> its subject after "Your": (naming the whole booking, naming it as a move does)
_SUBJECTS = {
    "hotel": ("{count}-night stay in {city} from {date}", "stay in {city}"),
    "flight": ("flight from {origin} to {destination} on {date}", "flight from {origin} to {destination}"),
    "car": ("{count}-day {car_type} car rental in {city} from {date}", "car rental in {city}"),
    "table": ("table for {count} in {city} on {date}", "table in {city}"),
}


def reply(booking: dict[str, str]) -> str:
    """The one-sentence reply for ``booking`` (``kind``, ``action`` and the kind's values).

    Confirm, cancel and pending name the whole booking, then its status ("is confirmed." / "has been
    cancelled." / "is pending confirmation.")::

        hotel   Your 3-night stay in Lisbon from 12 May ...
        flight  Your flight from Rome to Paris on 12 May ...
        car     Your 4-day SUV car rental in Oslo from 12 May ...
        table   Your table for 4 in Rome on 12 May ...

    A move names the booking by its place and gives the new date: "Your stay in Lisbon / Your flight from
    Rome to Paris / Your car rental in Oslo / Your table in Rome has been moved to 14 May."
    """
    whole, moved = _SUBJECTS[booking["kind"]]
    if booking["action"] == "move":
        return f"Your {moved.format_map(booking)} has been moved to {booking['date']}."
    return f"Your {whole.format_map(booking)} {_STATUS[booking['action']]}"


# --------------------------------------------------------------------------------------------------------
# Reading a note
# --------------------------------------------------------------------------------------------------------

_ACTION_CUES = {
    "cancel": re.compile(r"\b(?:cancel\w*|cxl)\b"),
    "move": re.compile(r"\b(?:move[ds]?|reschedul\w*|new date)\b"),
    "pending": re.compile(r"\b(?:pending|wait-?list(?:ed)?|awaiting|on hold|tentative)\b"),
    "confirm": re.compile(r"\b(?:confirm\w*|booked|ok)\b"),
}
_KIND_CUES = {
    "hotel": re.compile(r"\b(?:hotel|stay|room)\b"),
    "flight": re.compile(r"\b(?:flight|flt)\b"),
    "car": re.compile(r"\b(?:car|car hire|rental car)\b"),
    "table": re.compile(r"\b(?:table|restaurant|dinner)\b"),
}
_MONTH_BY_KEY = {m.lower(): m for m in MONTHS}
_MONTH_BY_KEY.update({m.lower()[:3]: m for m in MONTHS})
_MONTH = "(" + "|".join(sorted(_MONTH_BY_KEY, key=lambda k: (-len(k), k))) + r")\.?"
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_DAY_MONTH = re.compile(rf"\b{_DAY}\s+{_MONTH}(?![a-z])")
_MONTH_DAY = re.compile(rf"\b{_MONTH}\s+{_DAY}\b")
_NUMBER = r"(\d|" + "|".join(NUMBER_WORDS[1:]) + ")"
_COUNT = {
    "hotel": re.compile(rf"\b{_NUMBER}\s*(?:nights?|nts?|n)\b"),
    "car": re.compile(rf"\b{_NUMBER}\s*(?:days?|d)\b"),
    "table": re.compile(
        rf"\b(?:{_NUMBER}\s*(?:people|persons?|pax|guests?|ppl)|(?:for|party of)\s+{_NUMBER})\b"
    ),
}
_CITY_BY_KEY = {c.lower(): c for c in CITIES}
_CITY = re.compile(r"\b(" + "|".join(_CITY_BY_KEY) + r")\b")
_CAR_TYPE = re.compile(r"\b(" + "|".join(t.lower() for t in CAR_TYPES) + r")\b")


def _blank(text: str, m: re.Match[str]) -> str:
    """``text`` with the match replaced by spaces, so its digits are not read twice."""
    return text[: m.start()] + " " * (m.end() - m.start()) + text[m.end() :]


def _one(cues: dict[str, re.Pattern[str]], low: str, what: str) -> str:
    found = [name for name, cue in cues.items() if cue.search(low)]
    if len(found) != 1:
        raise ValueError(f"expected one {what} in the note, found {found or 'none'}: {low!r}")
    return found[0]


def read_note(note: str) -> dict[str, str]:
    """The booking a note describes: ``kind``, ``action`` and the values the kind carries (see
    ``KIND_SLOTS`` / ``KIND_MOVE_SLOTS``). Raises ``ValueError`` when the note is not readable.

    Rules: exactly one action cue (cancel/cxl; move/reschedule/new date; pending/waitlist/awaiting/on
    hold/tentative; confirm/booked/ok) and one kind cue (hotel/stay/room; flight/flt; car; table/
    restaurant/dinner). The date is a day and a month in either order ("12 May", "May 12th", "12 Sep");
    counts are a digit or number word with a unit
    (nights: "nights"/"nts"/"n"; days: "days"/"d"; people: "people"/"person"/"pax"/"guests"/"ppl", or "for 4",
    "party of 4"). Cities are the CITIES vocabulary, in any case; in a flight the first city named is
    the origin.
    """
    low = note.lower()
    action = _one(_ACTION_CUES, low, "action")
    kind = _one(_KIND_CUES, low, "kind")
    booking = {"kind": kind, "action": action}
    text = low
    dates = [m for m in (_DAY_MONTH.search(text), _MONTH_DAY.search(text)) if m]
    if dates:
        m = min(dates, key=lambda m: m.start())
        day, month = (m[1], m[2]) if m.re is _DAY_MONTH else (m[2], m[1])
        booking["date"] = f"{int(day)} {_MONTH_BY_KEY[month]}"
        text = _blank(text, m)
    if kind in _COUNT and (m := _COUNT[kind].search(text)):
        token = next(g for g in m.groups() if g)
        booking["count"] = token if token.isdigit() else str(NUMBER_WORDS.index(token))
        text = _blank(text, m)
    if m := _CAR_TYPE.search(text):
        booking["car_type"] = next(t for t in CAR_TYPES if t.lower() == m[1])
    cities = [_CITY_BY_KEY[m[1]] for m in _CITY.finditer(text)]
    if kind == "flight":
        booking.update(dict(zip(("origin", "destination"), cities, strict=False)))
    elif cities:
        booking["city"] = cities[0]
    wanted = KIND_MOVE_SLOTS[kind] if action == "move" else KIND_SLOTS[kind]
    missing = [name for name in wanted if name not in booking]
    if missing:
        raise ValueError(f"the note lacks {', '.join(missing)}: {note!r}")
    return {k: booking[k] for k in ("kind", "action", *wanted)}


# --------------------------------------------------------------------------------------------------------
# Generator: writing notes
# --------------------------------------------------------------------------------------------------------

# action -> (words that lead a note, "Cancelled: ..."; words that end one, "... - cancelled")
_ACTION_WORDS = {
    "confirm": (
        ["Confirm", "Confirmed", "CONFIRMED", "Booked", "OK"],
        ["confirmed", "booked", "ok", "confirm"],
    ),
    "cancel": (["Cancel", "Cancelled", "CANCELLED", "CXL", "Canceled"], ["cancelled", "canceled", "cxl"]),
    "move": (["Move", "Moved", "MOVED", "Reschedule", "New date"], ["moved", "rescheduled", "move"]),
    "pending": (
        ["Pending", "PENDING", "Waitlist", "On hold", "Tentative"],
        ["pending", "waitlisted", "on hold"],
    ),
}
_KIND_WORDS = {
    "hotel": ["hotel", "hotel", "hotel stay", "room"],
    "flight": ["flight", "flight", "flt"],
    "car": ["car", "car", "car hire", "rental car"],
    "table": ["table", "table", "restaurant", "dinner"],
}
_ORDINAL = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd"}


def _unit(n: int, word: str, unit: str) -> str:
    return f"{word} {unit}" if n == 1 else f"{word} {unit}s"


def _say_count(rng: random.Random, kind: str, n: int) -> str:
    word = NUMBER_WORDS[n] if rng.random() < 0.3 else str(n)
    if kind == "hotel":
        return rng.choice([_unit(n, word, "night"), _unit(n, word, "night"), f"{n}n", f"{n} nts"])
    if kind == "car":
        return rng.choice([_unit(n, word, "day"), _unit(n, word, "day"), f"{n}d"])
    people = f"{word} person" if n == 1 else f"{word} people"
    return rng.choice(
        [people, _unit(n, word, "guest"), f"{n} pax", f"for {word}", f"party of {word}", f"{n} ppl"]
    )


_DATE_PREFIXES = {
    "hotel": ["from ", "check-in ", "arr "],
    "flight": ["on ", "dep "],
    "car": ["from ", "pick-up "],
    "table": ["on "],
    "move": ["to ", "new date "],  # any kind, when the note is a move
}


def _say_date(rng: random.Random, date: str, prefixes: list[str]) -> str:
    day, month = int(date.split()[0]), date.split()[1]
    month_text = rng.choice([month, month, month[:3], month.lower(), month[:3].lower()])
    day_text = f"{day}{_ORDINAL.get(day, 'th')}" if rng.random() < 0.25 else str(day)
    return rng.choice(prefixes) + rng.choice([f"{day_text} {month_text}", f"{month_text} {day_text}"])


def _say_values(rng: random.Random, booking: dict[str, str], date_prefix: str) -> dict[str, str]:
    """Each value of ``booking`` as the note writes it (a flight's route is one piece, origin first).

    ``date_prefix``: "none", "maybe" or "always" ("from 12 May", "on May 12"). Notes that join their
    pieces with bare spaces always prefix the date, or "party of 4 May 12" would be ambiguous."""
    kind = booking["kind"]
    said = {}
    if "origin" in booking:
        o, d = booking["origin"], booking["destination"]
        said["route"] = rng.choice([f"{o}-{d}", f"{o} to {d}", f"from {o} to {d}", f"{o} > {d}", f"{o}/{d}"])
    if "city" in booking:
        said["city"] = booking["city"]
    if "count" in booking:
        said["count"] = _say_count(rng, kind, int(booking["count"]))
    if "car_type" in booking:
        car_type = booking["car_type"]
        said["car_type"] = rng.choice([car_type, car_type.lower()])
    if "date" in booking:
        prefixes = _DATE_PREFIXES["move" if booking["action"] == "move" else kind]
        if date_prefix == "none":
            prefixes = [""]
        elif date_prefix == "maybe":
            prefixes = ["", "", *prefixes]
        said["date"] = _say_date(rng, booking["date"], prefixes)
    return said


def _say_note(rng: random.Random, booking: dict[str, str]) -> str:
    """One note: the action word, the kind word and the values, in one of six layouts."""
    kind_word = rng.choice(_KIND_WORDS[booking["kind"]])
    lead, trail = _ACTION_WORDS[booking["action"]]
    if booking["action"] == "move" and rng.random() < 0.4:  # "table rome moved to may 12"
        said = _say_values(rng, booking, "none")
        date = said.pop("date")
        rest = list(said.values())
        rng.shuffle(rest)
        text = (
            " ".join([kind_word, *rest]) + f" {rng.choice(['moved to', 'move to', 'rescheduled to'])} {date}"
        )
        return text.lower() if rng.random() < 0.08 else text
    style = rng.randrange(5)
    parts = list(_say_values(rng, booking, "always" if style == 0 else "maybe").values())
    rng.shuffle(parts)
    parts = [kind_word, *parts]
    if style == 0:
        text = f"{rng.choice(lead)}: " + " ".join(parts)
    elif style == 1:
        text = ", ".join(parts) + f" - {rng.choice(trail)}"
    elif style == 2:
        text = " | ".join(parts) + f" | {rng.choice(trail)}"
    elif style == 3:
        text = f"{rng.choice(lead)} " + " / ".join(parts)
    else:
        text = "; ".join(parts) + f"; status: {rng.choice(trail)}"
    return text.lower() if rng.random() < 0.08 else text


def _sample_booking(rng: random.Random) -> dict[str, str]:
    kind, action = rng.choice(KINDS), rng.choice(ACTIONS)
    booking = {"kind": kind, "action": action}
    wanted = KIND_MOVE_SLOTS[kind] if action == "move" else KIND_SLOTS[kind]
    for name in wanted:
        if name == "city":
            booking["city"] = rng.choice(CITIES)
        elif name == "origin":
            booking["origin"], booking["destination"] = rng.sample(CITIES, 2)
        elif name == "count":
            booking["count"] = str(rng.randint(1, MAX_COUNT))
        elif name == "car_type":
            booking["car_type"] = rng.choice(CAR_TYPES)
        elif name == "date":
            booking["date"] = f"{rng.randint(1, MAX_DAY)} {rng.choice(MONTHS)}"
    return {k: booking[k] for k in ("kind", "action", *wanted)}


def _label(booking: dict[str, str], note: str) -> dict[str, str]:
    """The row's completion: the reply to what :func:`read_note` reads, which must be ``booking``."""
    try:
        read = read_note(note)
    except ValueError as e:
        raise RuntimeError(f"the reader cannot read a generated note: {e}") from e
    if read != booking:
        raise RuntimeError(
            f"the reader disagrees with the generator for {note!r}:\n  read: {read}\n  meant: {booking}"
        )
    return {"completion": reply(read)}


def generate(n: int = 1500, seed: int = 7) -> list[dict]:
    """``n`` rows from ``random.Random(seed)``; see the module docstring.

    Rows come in paraphrase families of 2-3 notes of one booking (sharing ``group`` and the reply); no
    prompt appears twice. Raises ``RuntimeError`` if :func:`read_note` reads a note differently from the
    booking the generator meant.
    """
    return family_rows(
        "replies", n, seed, sample=_sample_booking, say=_say_note, label=_label, ignore_case=True
    )


main = command_line(generate, DEFAULT_OUT, "Generate (or --check) the booking-reply generation data.")

if __name__ == "__main__":
    sys.exit(main())
