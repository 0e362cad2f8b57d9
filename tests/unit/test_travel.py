"""Tests for the travel demo task (examples/travel): the rule-based oracle, the generator and the data file."""

from __future__ import annotations

import importlib.util
import json
from collections import defaultdict
from pathlib import Path

import pytest

TRAVEL_DIR = Path(__file__).resolve().parents[2] / "examples" / "travel"


def _load_travel():
    # travel.py is a standalone script, not part of a package, so load it from its path.
    spec = importlib.util.spec_from_file_location("travel_example", TRAVEL_DIR / "travel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


travel = _load_travel()


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return travel.generate()


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((TRAVEL_DIR / "schema.json").read_text(encoding="utf-8"))


def start(flow: str) -> dict:
    return {"command": "start_flow", "flow": flow}


def slot(name: str, value: str) -> dict:
    return {"command": "set_slot", "slot": name, "value": value}


def clarify(*flows: str) -> dict:
    return {"command": "clarify", "flows": list(flows)}


CANCEL_FLOW = {"command": "cancel_flow"}


def state(flow: str, **slots: str) -> dict:
    return {"flow": flow, "slots": slots}


# --------------------------------------------------------------------------------------------------------
# Oracle
# --------------------------------------------------------------------------------------------------------

ORACLE_CASES = [
    # every flow, with slots emitted in canonical SLOTS order whatever order the text uses
    (
        "Book a flight to Paris from Rome on December 3",
        None,
        [
            start("book_flight"),
            slot("origin", "Rome"),
            slot("destination", "Paris"),
            slot("date", "2026-12-03"),
        ],
    ),
    (
        "I need a hotel in Lisbon for three nights for two guests",
        None,
        [start("book_hotel"), slot("city", "Lisbon"), slot("people", "2"), slot("nights", "3")],
    ),
    (
        "Rent an SUV in Berlin tomorrow until Friday",
        None,
        [
            start("book_car"),
            slot("city", "Berlin"),
            slot("date", "tomorrow"),
            slot("return_date", "friday"),
            slot("car_type", "suv"),
        ],
    ),
    (
        "Table for four at 8pm on 3 Dec, Italian please",
        None,
        [
            start("book_table"),
            slot("date", "2026-12-03"),
            slot("time", "20:00"),
            slot("people", "4"),
            slot("cuisine", "italian"),
        ],
    ),
    ("Cancel my booking BK123", None, [start("cancel_booking"), slot("booking_id", "BK123")]),
    ("What's the status of bk042?", None, [start("check_status"), slot("booking_id", "BK042")]),
    # flights: "X to Y", return dates, classes, people
    (
        "Flight Rome to Madrid returning Dec 10 in business class for 2 passengers",
        None,
        [
            start("book_flight"),
            slot("origin", "Rome"),
            slot("destination", "Madrid"),
            slot("return_date", "2026-12-10"),
            slot("people", "2"),
            slot("travel_class", "business"),
        ],
    ),
    (
        "fly to new york with two adults, premium economy",
        None,
        [
            start("book_flight"),
            slot("destination", "New York"),
            slot("people", "2"),
            slot("travel_class", "premium_economy"),
        ],
    ),
    # follow-ups with an active flow: set_slot only
    ("make it 6 people", state("book_table", city="Rome"), [slot("people", "6")]),
    ("change the city to Rome", state("book_hotel", city="Paris"), [slot("city", "Rome")]),
    ("change the origin to Vienna", state("book_flight"), [slot("origin", "Vienna")]),
    ("Scratch that, make it 9pm", state("book_table", time="20:00"), [slot("time", "21:00")]),
    ("change the car to a minivan", state("book_car"), [slot("car_type", "minivan")]),
    # cancel_flow vs cancel_booking
    ("cancel that", state("book_car", city="Rome"), [CANCEL_FLOW]),
    ("Never mind!", state("book_flight"), [CANCEL_FLOW]),
    ("please cancel BK543", state("book_hotel"), [start("cancel_booking"), slot("booking_id", "BK543")]),
    ("I want to cancel my reservation", None, [start("cancel_booking")]),
    ("never mind", None, []),
    # an explicit request for another flow starts it even with a flow active
    ("Book a hotel in Vienna", state("book_flight"), [start("book_hotel"), slot("city", "Vienna")]),
    # clarify
    (
        "I need to book something for Friday",
        None,
        [clarify("book_flight", "book_hotel", "book_car", "book_table"), slot("date", "friday")],
    ),
    ("Book something in Rome", None, [clarify("book_hotel", "book_car", "book_table"), slot("city", "Rome")]),
    (
        "Should I book a hotel or a flight for 2 people?",
        None,
        [clarify("book_flight", "book_hotel"), slot("people", "2")],
    ),
    ("Book something Italian", None, [start("book_table"), slot("cuisine", "italian")]),
    ("hello there", None, []),
]


@pytest.mark.parametrize(("message", "dialogue_state", "expected"), ORACLE_CASES)
def test_oracle_hand_written(message, dialogue_state, expected):
    assert travel.oracle(message, dialogue_state) == expected


@pytest.mark.parametrize(
    "said",
    [
        "December 3",
        "Dec 3",
        "Dec 3rd",
        "3 Dec",
        "3 December",
        "3rd of Dec",
        "the 3rd of December",
        "2026-12-03",
    ],
)
def test_oracle_date_formats(said):
    assert travel.oracle(f"Book a table on {said} for 2") == [
        start("book_table"),
        slot("date", "2026-12-03"),
        slot("people", "2"),
    ]


@pytest.mark.parametrize(
    ("said", "expected"),
    [("today", "today"), ("tomorrow", "tomorrow"), ("Friday", "friday"), ("this Sunday", "sunday")],
)
def test_oracle_relative_days(said, expected):
    assert travel.oracle(f"Find me a hotel {said}") == [start("book_hotel"), slot("date", expected)]


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("8pm", "20:00"),
        ("8 PM", "20:00"),
        ("7:30pm", "19:30"),
        ("19:30", "19:30"),
        ("9:15", "09:15"),
        ("11am", "11:00"),
        ("12:30pm", "12:30"),
        ("noon", "12:00"),
    ],
)
def test_oracle_times(said, expected):
    assert travel.oracle(f"Book a table at {said}") == [start("book_table"), slot("time", expected)]


@pytest.mark.parametrize(("said", "expected"), [("two", "2"), ("twelve", "12"), ("one", "1"), ("7", "7")])
def test_oracle_number_words(said, expected):
    assert travel.oracle(f"Hotel for {said} nights") == [start("book_hotel"), slot("nights", expected)]
    assert travel.oracle(f"Table for {said}") == [start("book_table"), slot("people", expected)]


def test_oracle_numbers_are_not_read_twice():
    # The 3 is the day, the 4 the head count, the 8 the hour.
    assert travel.oracle("dinner on 3 Dec 4 people 8pm") == [
        start("book_table"),
        slot("date", "2026-12-03"),
        slot("time", "20:00"),
        slot("people", "4"),
    ]


def test_render_prompt():
    assert travel.render_prompt("Book a table", None) == "Book a table"
    assert travel.render_prompt("Book a table", {"flow": None, "slots": {}}) == "Book a table"
    prompt = travel.render_prompt("make it 6 people", state("book_table", people="4", city="New York"))
    assert prompt == "[state] flow=book_table; city=New York; people=4\nmake it 6 people"


# --------------------------------------------------------------------------------------------------------
# Schema and generated rows
# --------------------------------------------------------------------------------------------------------


def test_schema_matches_vocabulary(schema):
    assert schema["$defs"]["flow"]["enum"] == list(travel.FLOWS)
    assert schema["$defs"]["slot"]["enum"] == list(travel.SLOTS)


def test_every_completion_is_valid(rows, schema):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for row in rows:
        errors = list(validator.iter_errors(json.loads(row["completion"])))
        assert not errors, (row["id"], row["completion"], errors[0].message)


def test_rows_are_well_formed(rows):
    assert len(rows) == 3000
    assert [row["id"] for row in rows] == [f"travel-{i:05d}" for i in range(1, 3001)]
    for row in rows:
        assert set(row) == {"id", "group", "prompt", "completion", "intent"}
        commands = json.loads(row["completion"])
        # compact separators, as the trainer will compare strings
        assert row["completion"] == json.dumps(commands, separators=(",", ":"), ensure_ascii=False)
        message = row["prompt"].split("\n", 1)[-1]
        assert commands == travel.oracle(message, _state_from_prompt(row["prompt"]))


def _state_from_prompt(prompt: str) -> dict | None:
    """Invert render_prompt's state line (used to re-label rows independently of the generator)."""
    if not prompt.startswith("[state] "):
        return None
    fields = dict(field.split("=", 1) for field in prompt.split("\n", 1)[0][len("[state] ") :].split("; "))
    flow = fields.pop("flow")
    return {"flow": None if flow == "none" else flow, "slots": fields}


def test_every_flow_appears(rows):
    started = {
        c["flow"] for row in rows for c in json.loads(row["completion"]) if c["command"] == "start_flow"
    }
    assert started == set(travel.FLOWS)
    commands = {c["command"] for row in rows for c in json.loads(row["completion"])}
    assert commands == {"start_flow", "set_slot", "cancel_flow", "clarify"}


def test_generated_values_stay_in_the_bounded_vocabulary(rows):
    # The generator writes only relative days, small counts and 3-digit booking ids.
    allowed = {
        "city": set(travel.CITIES),
        "origin": set(travel.CITIES),
        "destination": set(travel.CITIES),
        "date": set(travel.RELATIVE_DAYS),
        "cuisine": set(travel.CUISINES),
        "travel_class": set(travel.TRAVEL_CLASSES),
        "car_type": set(travel.CAR_TYPES),
        "booking_id": {f"BK{n:03d}" for n in range(1000)},
    }
    seen = defaultdict(set)
    for row in rows:
        commands = json.loads(row["completion"])
        flows = [c["flow"] for c in commands if c["command"] == "start_flow"]
        flow = flows[0] if flows else (_state_from_prompt(row["prompt"]) or {}).get("flow")
        for c in commands:
            if c["command"] != "set_slot":
                continue
            name, value = c["slot"], c["value"]
            seen[name].add(value)
            if name == "people":
                top = 8 if flow in ("book_table", None) else 6
                assert value in {str(n) for n in range(1, top + 1)}, (row["id"], value)
            else:
                assert value in allowed[name], (row["id"], name, value)
    # and every value of the small vocabularies is actually used
    assert seen["city"] == set(travel.CITIES)
    assert seen["cuisine"] == set(travel.CUISINES)
    assert seen["car_type"] == set(travel.CAR_TYPES)
    assert seen["date"] == set(travel.RELATIVE_DAYS)


def test_generator_writes_only_generated_slots(rows):
    # GENERATED_SLOTS is FLOW_SLOTS without nights, time and return_date; the oracle still reads those.
    dropped = {"nights", "time", "return_date"}
    assert set(travel.GENERATED_SLOTS) == set(travel.FLOW_SLOTS)
    for flow, names in travel.GENERATED_SLOTS.items():
        assert set(names) == set(travel.FLOW_SLOTS[flow]) - dropped, flow
    used = defaultdict(set)
    for row in rows:
        commands = json.loads(row["completion"])
        dialogue_state = _state_from_prompt(row["prompt"])
        if dialogue_state:  # states hold only slots their flow is generated with
            state_slots, state_flow = set(dialogue_state["slots"]), dialogue_state["flow"]
            assert state_slots <= set(travel.GENERATED_SLOTS[state_flow]), (
                row["id"],
                state_flow,
                state_slots,
            )
        flows = [c["flow"] for c in commands if c["command"] == "start_flow"]
        flow = flows[0] if flows else (dialogue_state or {}).get("flow")
        names = {c["slot"] for c in commands if c["command"] == "set_slot"}
        assert not names & dropped, (row["id"], names)
        if flow:  # clarify rows have no flow; their slots are checked by the line above
            assert names <= set(travel.GENERATED_SLOTS[flow]), (row["id"], flow, names)
            used[flow] |= names
    # every generated slot of every flow is actually used
    assert {flow: set(names) for flow, names in travel.GENERATED_SLOTS.items()} == dict(used)


def test_intent_mix(rows):
    counts = defaultdict(int)
    for row in rows:
        counts[row["intent"]] += 1
    share = {intent: count / len(rows) for intent, count in counts.items()}
    new_flows = sum(share[f] for f in ("book_flight", "book_hotel", "book_car", "book_table"))
    assert 0.6 < new_flows < 0.8
    assert 0.10 < share["follow_up"] < 0.20
    for intent in ("cancel_flow", "clarify", "cancel_booking", "check_status"):
        assert 0.01 < share[intent] < 0.08, intent
    # booking ids keep the two existing-booking flows at a realistic share
    assert share["cancel_booking"] >= 0.02
    assert share["check_status"] >= 0.02


def test_groups_are_paraphrase_families(rows):
    groups = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row)
    for group, members in groups.items():
        assert 2 <= len(members) <= 3, group
        assert len({m["intent"] for m in members}) == 1, group
        assert len({m["completion"] for m in members}) == 1, group
        assert len({m["prompt"] for m in members}) == len(members), group


def test_no_prompt_has_two_labels(rows):
    labels = defaultdict(set)
    for row in rows:
        labels[row["prompt"]].add(row["completion"])
    assert all(len(completions) == 1 for completions in labels.values())
    # stronger: the generator never repeats a prompt at all
    assert len(labels) == len(rows)


def test_prompts_are_short(rows):
    lengths = sorted(len(row["prompt"]) for row in rows)
    assert lengths[int(0.9 * len(lengths))] < 120


# --------------------------------------------------------------------------------------------------------
# Reproducibility
# --------------------------------------------------------------------------------------------------------


def test_committed_file_is_reproducible(rows):
    committed = (TRAVEL_DIR / "data" / "travel.jsonl").read_bytes()
    assert travel.to_jsonl(rows).encode("utf-8") == committed


def test_same_seed_same_rows_different_seed_different_rows():
    assert travel.generate(200, seed=11) == travel.generate(200, seed=11)
    assert travel.generate(200, seed=11) != travel.generate(200, seed=12)


def test_cli_check(tmp_path, capsys):
    out = tmp_path / "travel.jsonl"
    assert travel.main(["--n", "50", "--seed", "3", "--out", str(out)]) == 0
    assert travel.main(["--n", "50", "--seed", "3", "--out", str(out), "--check"]) == 0
    out.write_bytes(out.read_bytes().replace(b"\n", b"\r\n", 1))
    assert travel.main(["--n", "50", "--seed", "3", "--out", str(out), "--check"]) == 1
    assert "differs" in capsys.readouterr().err
