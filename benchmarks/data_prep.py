"""How fast are the data stages (ingest + schema validation, clean, split) on a large JSONL file, and how
much memory does each take?

Generates N synthetic rows shaped like examples/travel/data/travel.jsonl (seeded; not timed): paraphrase
families of 1-3 rows, prompts composed from word lists, cities, dates and numbers so rows are mostly
distinct, completions valid against examples/travel/schema.json, plus injected exact duplicates (~0.5%),
near duplicates (~0.5%: one character or punctuation changed), bad lines of several kinds (~0.3%) and a
few e-mail addresses and phone numbers for the PII redactor. Then each stage runs in a fresh child process
of this script (``--stage-only``), one after the other, on the previous stage's output:

  * wall time: ``time.perf_counter`` inside the child, around the stage call only (interpreter start,
    imports, the phonenumbers/tokenizer warm-up are outside it);
  * peak RSS: the kernel's high-water mark of that child alone (``os.wait4``), so it includes the
    interpreter and the imports; the child also reports its RSS just before the call, for the baseline;
  * a stage whose RSS passes ``--max-rss-mb`` (default 3/4 of RAM) is killed and reported as failed,
    so a runaway stage cannot take a shared machine down; the stages after it do not run.

The template space is small, as in the travel data, so the generator also makes some duplicates by chance:
clean removes more rows than were injected (measured: ~0.1% extra exact, ~0.7% extra near at 1M rows).

Prints per-stage time, rows/s, peak RSS (MB and x the input JSONL size), output sizes and counts, then a
Markdown table to paste into benchmarks/RESULTS.md. Measures; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/data_prep.py [--rows 1000000] [--stages ingest,clean,split]
        [--near-dup-threshold 0.9] [--max-tokens 192 --tokenizer tiny://travel] [--workdir DIR] [--keep]
        [--max-rss-mb MB]

A --workdir keeps the generated input (reused when rows and seed match) and every stage's output, so
``--stages clean,split`` can be re-run on an earlier run's ingest output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file: make `components` importable without an install
    sys.path.insert(0, str(REPO))

from runinfo import code_version, machine  # noqa: E402  (benchmarks/runinfo.py, next to this file)

SCHEMA_PATH = REPO / "examples" / "travel" / "schema.json"
CONFIG_PATH = REPO / "examples" / "travel" / "config.yaml"
STAGES = ("ingest", "clean", "split")
GENERATOR_VERSION = 1  # bump when the generated data changes: a kept input file is reused only on a match

# ---- synthetic data -----------------------------------------------------------------------------------

P_EXACT_DUP = 0.005
P_NEAR_DUP = 0.005
P_BAD = 0.003
P_PII = 0.003  # rows given an e-mail address or a phone number (half each)
POOL = 10_000  # reservoir of earlier good rows that duplicates are copied from

CITIES = (
    "Amsterdam",
    "Athens",
    "Barcelona",
    "Berlin",
    "Bologna",
    "Boston",
    "Brussels",
    "Budapest",
    "Buenos Aires",
    "Cairo",
    "Chicago",
    "Copenhagen",
    "Dublin",
    "Edinburgh",
    "Florence",
    "Geneva",
    "Hamburg",
    "Helsinki",
    "Hong Kong",
    "Istanbul",
    "Kraków",
    "Lisbon",
    "London",
    "Los Angeles",
    "Lyon",
    "Madrid",
    "Málaga",
    "Marrakesh",
    "Melbourne",
    "Mexico City",
    "Milan",
    "Montreal",
    "Munich",
    "Naples",
    "New York",
    "Oslo",
    "Paris",
    "Porto",
    "Prague",
    "Reykjavik",
    "Rio de Janeiro",
    "Rome",
    "San Francisco",
    "São Paulo",
    "Seoul",
    "Seville",
    "Singapore",
    "Stockholm",
    "Sydney",
    "Tokyo",
    "Toronto",
    "Valencia",
    "Vienna",
    "Warsaw",
    "Zürich",
)
CUISINES = (
    "chinese",
    "french",
    "greek",
    "indian",
    "italian",
    "japanese",
    "korean",
    "lebanese",
    "mexican",
    "peruvian",
    "spanish",
    "thai",
    "turkish",
    "vietnamese",
)
CAR_TYPES = ("compact", "suv", "minivan", "electric", "convertible", "van", "luxury")
TRAVEL_CLASSES = {
    "economy": "economy",
    "premium_economy": "premium economy",
    "business": "business",
    "first": "first class",
}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
RELATIVE_DAYS = ("today", "tomorrow", *WEEKDAYS)
ISO_DATES = tuple((dt.date(2026, 1, 1) + dt.timedelta(days=d)).isoformat() for d in range(730))
TIMES = tuple(f"{h:02d}:{m:02d}" for h in range(24) for m in range(0, 60, 5))
BOOKING_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
FIRST_NAMES = ("anna", "ben", "chloe", "diego", "emma", "farid", "greta", "hugo", "ines", "jonas", "kai")
LAST_NAMES = ("berg", "costa", "dubois", "eriksen", "fischer", "garcia", "horvat", "ito", "jansen")
MAIL_DOMAINS = ("example.com", "mail.example.org", "travel-example.net")
OPENERS = ("", "", "", "Hi, ", "Hello, ", "Hey, ", "Please ", "Quick one: ", "Hi there, ", "Good morning, ")
CLOSERS = ("", "", "", " please", ", thanks", ". Thank you!", "!", " asap", " if you can", ", cheers", "?")

# Per flow: (verbs, nouns, {slot: phrasings}); a family picks a subset of the slots and fixed values, and
# each of its rows is phrased independently (verb, noun, phrasing and order of the slot phrases).
FLOWS = {
    "book_flight": (
        ("book", "get me", "find", "I need", "I'd like", "can you book", "please arrange", "I want"),
        ("a flight", "flights", "a plane ticket", "seats", "tickets", "an airfare"),
        {
            "origin": ("from {v}", "departing {v}", "out of {v}", "leaving {v}"),
            "destination": ("to {v}", "into {v}", "going to {v}", "arriving in {v}"),
            "date": ("on {v}", "for {v}", "departing {v}", "{v}"),
            "people": ("for {v}", "{v} people", "{v} passengers", "party of {v}", "for {v} adults"),
            "travel_class": ("in {v}", "flying {v}", "{v} seats", "{v} please"),
        },
    ),
    "book_hotel": (
        ("book", "reserve", "find me", "I need", "I'd like", "can you get", "look for"),
        ("a hotel", "a room", "accommodation", "a place to stay", "hotel rooms", "a double room"),
        {
            "city": ("in {v}", "in central {v}", "near the centre of {v}", "somewhere in {v}"),
            "date": ("from {v}", "checking in {v}", "starting {v}", "on {v}", "arriving {v}"),
            "nights": ("for {v} nights", "{v} nights", "staying {v} nights"),
            "people": ("for {v} guests", "{v} people", "for {v}", "sleeps {v}"),
        },
    ),
    "book_car": (
        ("rent", "book", "hire", "I need", "I'd like to rent", "reserve", "get me"),
        ("a car", "a rental car", "a car hire", "wheels", "a vehicle"),
        {
            "city": ("in {v}", "at {v} airport", "pick-up in {v}", "around {v}"),
            "date": ("on {v}", "from {v}", "pick-up {v}", "starting {v}"),
            "time": ("at {v}", "around {v}", "pick-up at {v}", "by {v}"),
            "car_type": ("a {v} one", "type {v}", "{v} if possible", "make it {v}"),
        },
    ),
    "book_table": (
        ("book", "reserve", "get us", "I need", "we'd like", "can you find", "please book"),
        ("a table", "a dinner table", "a restaurant", "a spot for dinner", "lunch", "a table for dinner"),
        {
            "city": ("in {v}", "in downtown {v}", "somewhere in {v}", "near {v} station"),
            "date": ("on {v}", "for {v}", "{v}", "this {v}"),
            "time": ("at {v}", "around {v}", "for {v}", "by {v}"),
            "people": ("for {v}", "{v} people", "party of {v}", "{v} of us"),
            "cuisine": ("{v} food", "a {v} place", "serving {v}", "{v} cuisine"),
        },
    ),
    "cancel_booking": (
        ("cancel", "please cancel", "I want to cancel", "can you cancel", "drop", "call off"),
        ("my booking", "the reservation", "booking", "my trip", "reservation"),
        {"booking_id": ("{v}", "number {v}", "ref {v}", "with reference {v}")},
    ),
    "check_status": (
        ("check", "what's the status of", "is there news on", "look up", "can you check", "any update on"),
        ("my booking", "the reservation", "booking", "my trip", "order"),
        {"booking_id": ("{v}", "number {v}", "ref {v}", "with reference {v}")},
    ),
}
FOLLOW_UPS = {  # slot -> phrasings of a change to the flow in progress
    "people": ("Make it {v} people", "Actually we are {v}", "Change it to {v} guests", "Sorry, {v} of us"),
    "date": ("Move it to {v}", "Change the date to {v}", "Can we do {v} instead", "Actually {v}"),
    "city": ("Make that {v} instead", "Change the city to {v}", "Actually in {v}", "Switch to {v}"),
    "time": ("Make it {v}", "Change the time to {v}", "Can we do {v}", "Push it to {v}"),
}
STATE_FLOWS = ("book_hotel", "book_table", "book_car")
CANCELS = ("Never mind, cancel that", "Forget it", "Stop, I changed my mind", "Cancel this one please")
CLARIFY = (
    "Can you sort out something in {city} on {date}",
    "I need something in {city} for {date}",
    "Help me with {city} on {date}",
    "Arrange things in {city}, {date}",
)
BAD_KINDS = (  # kind -> the ingest reason code it should get
    ("not_json", "NOT_JSON"),
    ("missing_field", "MISSING_FIELD"),
    ("wrong_type", "WRONG_TYPE"),
    ("empty_field", "EMPTY_FIELD"),
    ("target_not_json", "TARGET_NOT_JSON"),
    ("target_schema", "TARGET_SCHEMA"),
    ("duplicate_id", "DUPLICATE_ID"),
)


def _value(rng: random.Random, slot: str) -> tuple[str, str]:
    """(value in the completion, as written in the prompt) of one slot."""
    if slot in ("city", "origin", "destination"):
        v = rng.choice(CITIES)
        return v, v
    if slot == "date":
        v = rng.choice(ISO_DATES) if rng.random() < 0.8 else rng.choice(RELATIVE_DAYS)
        return v, v
    if slot == "time":
        v = rng.choice(TIMES)
        return v, v
    if slot == "people":
        v = str(rng.randint(1, 12))
        return v, v
    if slot == "nights":
        v = str(rng.randint(1, 21))
        return v, v
    if slot == "cuisine":
        v = rng.choice(CUISINES)
        return v, v
    if slot == "car_type":
        v = rng.choice(CAR_TYPES)
        return v, v
    if slot == "travel_class":
        v = rng.choice(tuple(TRAVEL_CLASSES))
        return v, TRAVEL_CLASSES[v]
    if slot == "booking_id":
        v = "BK" + "".join(rng.choice(BOOKING_CHARS) for _ in range(6))
        return v, v
    raise ValueError(slot)


def _dumps(commands: list[dict]) -> str:
    return json.dumps(commands, separators=(",", ":"), ensure_ascii=False)


def _set(slot: str, value: str) -> dict:
    return {"command": "set_slot", "slot": slot, "value": value}


def _dress(rng: random.Random, text: str) -> str:
    opener = rng.choice(OPENERS)
    if not opener:
        text = text[0].upper() + text[1:]
    elif not text.startswith(("I ", "I'")):
        text = text[0].lower() + text[1:]
    return f"{opener}{text}{rng.choice(CLOSERS)}"


def _family(rng: random.Random, size: int) -> tuple[str, list[str]]:
    """(completion, ``size`` prompts phrased differently) of one paraphrase family."""
    r = rng.random()
    if r < 0.75:  # a new request: start_flow + set_slot for a subset of the flow's slots
        flow = rng.choice(tuple(FLOWS))
        verbs, nouns, phrasings = FLOWS[flow]
        slots = [s for s in phrasings if rng.random() < 0.6] or [rng.choice(tuple(phrasings))]
        if flow == "book_flight" and "origin" in slots and "destination" in slots:
            values = dict(zip(("origin", "destination"), rng.sample(CITIES, 2), strict=True))
        else:
            values = {}
        written = {}
        for s in slots:
            v, w = (values[s], values[s]) if s in values else _value(rng, s)
            values[s], written[s] = v, w
        completion = _dumps([{"command": "start_flow", "flow": flow}, *(_set(s, values[s]) for s in slots)])
        prompts = []
        for verb, noun in zip(rng.sample(verbs, size), rng.sample(nouns, size), strict=True):
            parts = [rng.choice(phrasings[s]).format(v=written[s]) for s in slots]
            rng.shuffle(parts)
            sep = rng.choice((" ", ", "))
            prompts.append(_dress(rng, f"{verb} {noun} {sep.join(parts)}"))
        return completion, prompts
    state_flow = rng.choice(STATE_FLOWS)
    state_slots = ("city", "date", "time" if state_flow != "book_hotel" else "people")
    state = "; ".join(f"{s}={_value(rng, s)[0]}" for s in state_slots)
    header = f"[state] flow={state_flow}; {state}\n"
    if r < 0.9:  # a follow-up changing one slot
        slot = rng.choice(tuple(FOLLOW_UPS))
        v, w = _value(rng, slot)
        completion = _dumps([_set(slot, v)])
        return completion, [header + _dress(rng, t.format(v=w)) for t in rng.sample(FOLLOW_UPS[slot], size)]
    if r < 0.95:  # abandon the flow in progress
        return _dumps([{"command": "cancel_flow"}]), [
            header + _dress(rng, t) for t in rng.sample(CANCELS, size)
        ]
    flows = sorted(rng.sample(("book_flight", "book_hotel", "book_car", "book_table"), rng.randint(2, 3)))
    city, date = _value(rng, "city")[0], _value(rng, "date")[0]
    completion = _dumps([{"command": "clarify", "flows": flows}])
    return completion, [_dress(rng, t.format(city=city, date=date)) for t in rng.sample(CLARIFY, size)]


def _pii(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        user = f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}{rng.randint(1, 99)}"
        return "EMAIL", f" - email me at {user}@{rng.choice(MAIL_DOMAINS)}"
    number = rng.choice(
        (
            f"+44 20 7946 0{rng.randint(100, 999)}",
            f"+1 646 273 {rng.randint(1000, 9999)}",
            f"(212) 555-0{rng.randint(100, 199)}",
            f"+33 1 42 68 {rng.randint(10, 99)} {rng.randint(10, 99)}",
        )
    )
    return "PHONE", f" or call me on {number}"


def _near(rng: random.Random, prompt: str) -> str:
    """The prompt with one character changed, or its punctuation changed (never only case/whitespace)."""
    kind = rng.random()
    if kind < 0.5:
        letters = [i for i, ch in enumerate(prompt) if "a" <= ch.lower() <= "z"]
        i = rng.choice(letters)
        new = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz" if c != prompt[i].lower()])
        return prompt[:i] + new + prompt[i + 1 :]
    if kind < 0.75:
        return prompt[:-1] if prompt[-1] in "!?." else prompt + rng.choice("!?.")
    spaces = [i for i, ch in enumerate(prompt) if ch == " " and prompt[i - 1] not in ",:"]
    if not spaces:
        return prompt + "!"
    i = rng.choice(spaces)
    return prompt[:i] + "," + prompt[i:]


def _bad_line(rng: random.Random, kind: str, row: dict, pool: list[dict]) -> str:
    if kind == "not_json":
        line = json.dumps(row, ensure_ascii=False)
        return line[: rng.randint(10, len(line) - 5)]
    bad = dict(row)
    if kind == "missing_field":
        del bad[rng.choice(("prompt", "completion"))]
    elif kind == "wrong_type":
        if rng.random() < 0.5:
            bad["completion"] = json.loads(row["completion"])  # a list, not a JSON string
        else:
            bad["prompt"] = rng.randint(1, 10**6)
    elif kind == "empty_field":
        bad["prompt"] = rng.choice(("", "   ", "\n"))
    elif kind == "target_not_json":
        c = row["completion"]
        bad["completion"] = rng.choice((c[: len(c) // 2], c.replace('"', "'"), "start_flow book_hotel"))
    elif kind == "target_schema":
        bad["completion"] = rng.choice(
            (
                '[{"command":"start_flow","flow":"book_train"}]',
                '[{"command":"set_slot","slot":"budget","value":"300"}]',
                '[{"command":"set_slot","slot":"city"}]',
                "[]",
                '{"command":"cancel_flow"}',
                '[{"command":"clarify","flows":["book_car"]}]',
            )
        )
    elif kind == "duplicate_id":
        bad["id"] = rng.choice(pool)["id"] if pool else row["id"]
    return json.dumps(bad, ensure_ascii=False)


def generate(path: Path, rows: int, seed: int) -> dict:
    """Write ``rows`` JSONL lines to ``path`` (in chunks); return what was injected, by kind."""
    rng = random.Random(seed)
    injected: Counter = Counter()
    pool: list[dict] = []  # reservoir sample of earlier good rows (duplicates are copied from it)
    good = 0
    chunk: list[str] = []
    n = family = 0
    with open(path, "w", encoding="utf-8") as fh:
        while n < rows:
            family += 1
            group = f"fam-{family:07d}"
            completion, prompts = _family(rng, rng.choice((1, 2, 2, 3)))
            for prompt in prompts:
                if n >= rows:
                    break
                n += 1
                row = {"completion": completion, "group": group, "id": f"syn-{n:07d}", "prompt": prompt}
                r = rng.random()
                if r < P_BAD and pool:
                    kind = rng.choice(BAD_KINDS)[0]
                    injected[kind] += 1
                    chunk.append(_bad_line(rng, kind, row, pool))
                    continue
                if r < P_BAD + P_EXACT_DUP + P_NEAR_DUP and pool:
                    src = rng.choice(pool)
                    near = r >= P_BAD + P_EXACT_DUP
                    injected["near_duplicate" if near else "exact_duplicate"] += 1
                    row = {**src, "id": row["id"], "group": group}
                    if near:
                        row["prompt"] = _near(rng, src["prompt"])
                elif rng.random() < P_PII:
                    kind, text = _pii(rng)
                    injected[f"pii_{kind.lower()}"] += 1
                    row["prompt"] += text
                chunk.append(json.dumps(row, ensure_ascii=False))
                good += 1
                if len(pool) < POOL:
                    pool.append(row)
                else:
                    j = rng.randrange(good)
                    if j < POOL:
                        pool[j] = row
                if len(chunk) >= 50_000:
                    fh.write("\n".join(chunk) + "\n")
                    chunk = []
        if chunk:
            fh.write("\n".join(chunk) + "\n")
    return {"rows": rows, "seed": seed, "families": family, "injected": dict(sorted(injected.items()))}


# ---- one stage, in a child process --------------------------------------------------------------------


def _paths(work: Path) -> dict[str, Path]:
    return {
        "input": work / "input.jsonl",
        "ingested": work / "ingested.parquet",
        "ingest_rejects": work / "ingest_rejects.jsonl",
        "clean": work / "clean.parquet",
        "clean_rejects": work / "clean_rejects.jsonl",
        "train": work / "train.parquet",
        "eval": work / "eval.parquet",
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _system_prompt() -> str:
    import yaml

    return yaml.safe_load(CONFIG_PATH.read_text())["task"]["system_prompt"]


def run_stage(stage: str, args: argparse.Namespace) -> dict:
    """Import and set up outside the timer, then time the stage call alone."""
    import importlib

    # imports are not part of the stage time: everything the stages import lazily, where installed
    for name in (
        "pyarrow",
        "pyarrow.parquet",
        "numpy",
        "jsonschema",
        "jsonschema_rs",
        "orjson",
        "phonenumbers",
    ):
        try:
            importlib.import_module(name)
        except ImportError:
            pass

    p = _paths(Path(args.workdir))
    schema = json.loads(SCHEMA_PATH.read_text())
    out: dict = {"stage": stage}
    if stage == "ingest":
        from components.ingest.core import IngestOptions, ingest

        options = IngestOptions(shape="prompt_completion", output_schema=schema)
        call = lambda: ingest(str(p["input"]), "", options, p["ingested"], p["ingest_rejects"])  # noqa: E731
    elif stage == "clean":
        from components.clean import pii
        from components.clean.core import CleanOptions, clean

        pii._phonenumbers()  # its import is paid on the first phone-shaped row otherwise
        options = CleanOptions(
            pii="redact", near_dup_threshold=args.near_dup_threshold, max_tokens=args.max_tokens
        )
        if args.max_tokens > 0:
            import transformers  # noqa: F401

            from components.common.models import resolve_base

            resolve_base(args.tokenizer)  # builds tiny:// once (cached); loading it stays in the timed call
            options.tokenizer, options.system_prompt = args.tokenizer, _system_prompt()
        call = lambda: clean(p["ingested"], p["clean"], p["clean_rejects"], options)  # noqa: E731
    else:
        from components.split.core import SplitOptions, split

        options = SplitOptions(eval_fraction=0.1, seed=13, cover=None, output_schema=schema)
        call = lambda: split(p["clean"], p["train"], p["eval"], options)  # noqa: E731
    out["rss_before_mb"] = _rss_mb()
    start = time.perf_counter()
    result = call()
    out["seconds"] = time.perf_counter() - start
    out["rss_self_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if stage == "ingest":
        out.update(rows_in=result.rows_in, rows_out=result.accepted, rejected=dict(result.rejected))
    elif stage == "clean":
        out.update(
            rows_in=result.rows_in,
            rows_out=result.kept,
            rejected=dict(result.rejected),
            pii=dict(result.pii),
            pii_rows=result.pii_rows,
        )
        stats = getattr(result, "near_dup_stats", None)  # candidate pairs and how they were settled
        if stats is not None:
            out["near_dup"] = {k: v for k, v in vars(stats).items() if isinstance(v, int)}
    else:
        out.update(
            rows_in=result.train_rows + result.eval_rows,
            rows_out=result.train_rows + result.eval_rows,
            train_rows=result.train_rows,
            eval_rows=result.eval_rows,
            train_groups=result.train_groups,
            eval_groups=result.eval_groups,
            moved_groups=len(result.moved_groups),
        )
    return out


def spawn_stage(stage: str, args: argparse.Namespace) -> dict:
    """Run one stage in a fresh child; its peak RSS is the kernel's high-water mark of that child alone."""
    result_path = Path(args.workdir) / f".{stage}-result.json"
    result_path.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--stage-only",
        stage,
        "--workdir",
        str(args.workdir),
        "--near-dup-threshold",
        str(args.near_dup_threshold),
        "--max-tokens",
        str(args.max_tokens),
        "--tokenizer",
        args.tokenizer,
        "--result",
        str(result_path),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    killed = ""
    while True:  # poll: the RSS guard needs to look at the child while it runs
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # rusage of this child only
        if pid:
            break
        if args.max_rss_mb > 0 and not killed and _rss_of(proc.pid) > args.max_rss_mb:
            killed = f"killed by the RSS guard at {args.max_rss_mb:,} MB (--max-rss-mb)"
            proc.kill()
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = {"stage": stage, "peak_rss_mb": usage.ru_maxrss / 1024, "process_wall": time.perf_counter() - start}
    if proc.returncode != 0:  # report the failure; the stages after it cannot run
        out["failed"] = killed or f"exit status {proc.returncode}"
        print(f"  {stage} FAILED: {out['failed']} after {out['process_wall']:.0f} s", flush=True)
        return out
    return {**json.loads(result_path.read_text()), **out}


def _rss_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def _default_rss_limit() -> int:
    """3/4 of the machine's memory: a runaway stage is stopped before the OOM killer picks a victim."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 0.75 / 2**20)
    except (OSError, ValueError):
        return 0


# ---- the benchmark ------------------------------------------------------------------------------------


def _mb(path: Path) -> float:
    return path.stat().st_size / 1e6 if path.exists() else 0.0


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1])) or "none"


def prepare_input(args: argparse.Namespace, paths: dict[str, Path]) -> dict:
    meta_path = Path(args.workdir) / "input.meta.json"
    if paths["input"].exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if (meta.get("rows"), meta.get("seed"), meta.get("version")) == (
            args.rows,
            args.seed,
            GENERATOR_VERSION,
        ):
            print(f"reusing {paths['input']} ({args.rows:,} rows, seed {args.seed})", flush=True)
            return meta
    start = time.perf_counter()
    meta = generate(paths["input"], args.rows, args.seed)
    meta["version"] = GENERATOR_VERSION
    meta["generate_seconds"] = time.perf_counter() - start
    meta_path.write_text(json.dumps(meta, indent=2))
    print(
        f"generated {args.rows:,} rows ({_mb(paths['input']):.1f} MB) in {meta['generate_seconds']:.1f} s "
        "(not timed)",
        flush=True,
    )
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic JSONL rows to generate")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--workdir", default="", help="where the input and outputs go (default: a temp dir)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp workdir (a --workdir is never removed)"
    )
    parser.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated subset of ingest,clean,split"
    )
    parser.add_argument("--near-dup-threshold", type=float, default=0.9, help="-1 = exact duplicates only")
    parser.add_argument("--max-tokens", type=int, default=-1, help="-1 = no token-length filter")
    parser.add_argument("--tokenizer", default="tiny://travel", help="model locator for --max-tokens")
    parser.add_argument(
        "--max-rss-mb",
        type=int,
        default=_default_rss_limit(),
        help="kill a stage whose RSS passes this many MB and report it as failed (default: 3/4 of RAM; 0 = off)",
    )
    parser.add_argument("--stage-only", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage_only:  # the child: one stage, its result as JSON
        Path(args.result).write_text(json.dumps(run_stage(args.stage_only, args)))
        return

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"--stages: unknown {sorted(unknown)}; use {','.join(STAGES)}")
    made_tmp = not args.workdir
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="slmforge-data-prep-")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    paths = _paths(Path(args.workdir))
    try:
        meta = prepare_input(args, paths)
        input_mb = _mb(paths["input"])
        produces = {"ingest": "ingested", "clean": "clean", "split": "train"}
        # walk back from the last selected stage: a stage that runs needs the previous stage's output,
        # which is reused from the workdir when present and otherwise produced by an unreported run
        plan: dict[str, str] = {}
        needed = False
        for stage in reversed(STAGES[: max(STAGES.index(s) for s in stages) + 1]):
            if stage in stages:
                plan[stage] = "timed"
            elif needed:
                plan[stage] = "reuse" if paths[produces[stage]].exists() else "prepare"
            else:
                plan[stage] = "skip"
            needed = plan[stage] in ("timed", "prepare")
        results: dict[str, dict] = {}
        for stage in STAGES:
            action = plan.get(stage, "skip")
            if action == "reuse":
                print(f"reusing {paths[produces[stage]]} (stage {stage} not selected)", flush=True)
            elif action == "prepare":
                print(f"running {stage} to prepare the next stage's input (not reported) ...", flush=True)
                if "failed" in spawn_stage(stage, args):
                    break
            elif action == "timed":
                print(f"running {stage} ...", flush=True)
                r = results[stage] = spawn_stage(stage, args)
                if "failed" in r:
                    break
                print(
                    f"  {stage}: {r['seconds']:.1f} s, {r['rows_in'] / r['seconds']:,.0f} rows/s, "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
        report(args, meta, input_mb, results, paths)
    finally:
        if made_tmp and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
        else:
            print(f"\nkept {args.workdir}")


def _command() -> str:
    """The command line, less the workdir options (machine-specific)."""
    out, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--workdir", "--max-rss-mb"):
            skip = True
        elif not a.startswith(("--workdir=", "--max-rss-mb=")) and a != "--keep":
            out.append(a)
    return " ".join(["OMP_NUM_THREADS=1 python benchmarks/data_prep.py", *out])


def report(args, meta: dict, input_mb: float, results: dict[str, dict], paths: dict[str, Path]) -> None:
    outputs = {
        "ingest": _mb(paths["ingested"]),
        "clean": _mb(paths["clean"]),
        "split": _mb(paths["train"]) + _mb(paths["eval"]),
    }
    rejects = {"ingest": _mb(paths["ingest_rejects"]), "clean": _mb(paths["clean_rejects"])}
    clean_desc = "clean (PII redact, " + (
        f"near-dup {args.near_dup_threshold:g}" if args.near_dup_threshold > 0 else "exact dups only"
    )
    if args.max_tokens > 0:
        clean_desc += f", max_tokens {args.max_tokens} via {args.tokenizer}"
    labels = {
        "ingest": "ingest + schema validation",
        "clean": clean_desc + ")",
        "split": "split (eval 0.1, seed 13, schema-label coverage)",
    }
    when = time.strftime("%Y-%m-%d")
    threads = os.environ.get("OMP_NUM_THREADS", "")
    done = {stage: r for stage, r in results.items() if "failed" not in r}
    failed = {stage: r for stage, r in results.items() if "failed" in r}
    total_s = sum(r["seconds"] for r in done.values())
    print()
    code = code_version("components")
    print(f"machine: {machine()}, OMP_NUM_THREADS={threads}, python {platform.python_version()}, {when}")
    print(f"code: {code}")
    print(
        f"input: {args.rows:,} rows, {input_mb:.1f} MB JSONL, seed {args.seed}; injected: {_counts(meta['injected'])}"
    )
    print()
    head = (
        f"{'stage':<10} {'rows in':>10} {'rows out':>10} {'s':>8} {'rows/s':>10} {'RSS before':>11} "
        f"{'peak RSS':>9} {'x input':>8} {'out MB':>8}"
    )
    print(head)
    print("-" * len(head))
    for stage, r in results.items():
        if stage in failed:
            print(
                f"{stage:<10} FAILED ({r['failed']}) after {r['process_wall']:.0f} s, peak RSS "
                f"{r['peak_rss_mb']:.0f} MB ({r['peak_rss_mb'] / input_mb:.2f}x input)"
            )
            continue
        print(
            f"{stage:<10} {r['rows_in']:>10,} {r['rows_out']:>10,} {r['seconds']:>8.2f} "
            f"{r['rows_in'] / r['seconds']:>10,.0f} {r['rss_before_mb']:>8.0f} MB {r['peak_rss_mb']:>6.0f} MB "
            f"{r['peak_rss_mb'] / input_mb:>7.2f}x {outputs[stage]:>8.1f}"
        )
    if done and not failed:
        print(f"{'total':<10} {args.rows:>10,} {'':>10} {total_s:>8.2f} {args.rows / total_s:>10,.0f}")
    print()
    notes = [f"Injected by the generator: {_counts(meta['injected'])}."]
    for stage, r in done.items():
        if stage in ("ingest", "clean"):
            notes.append(
                f"{stage} rejected: {_counts(r['rejected'])} (rejects file {rejects[stage]:.1f} MB)."
            )
        if stage == "clean":
            notes.append(f"PII redacted in {r['pii_rows']:,} rows ({_counts(r['pii'])}).")
            if r.get("near_dup"):
                notes.append(
                    "Near-duplicate pairs: " + ", ".join(f"{k} {v:,}" for k, v in r["near_dup"].items()) + "."
                )
        if stage == "split":
            notes.append(
                f"Split: train {r['train_rows']:,} rows / {r['train_groups']:,} groups "
                f"({_mb(paths['train']):.1f} MB), eval {r['eval_rows']:,} rows / {r['eval_groups']:,} groups "
                f"({_mb(paths['eval']):.1f} MB), {r['moved_groups']:,} groups moved to train for coverage."
            )
    for stage, r in results.items():
        print(f"{stage} child process wall (interpreter start + imports + stage): {r['process_wall']:.1f} s")
    print("\n".join(notes))

    # ---- Markdown for RESULTS.md ----
    print()
    print(
        f"`{_command()}`: {args.rows:,} synthetic travel-shaped rows ({input_mb:.1f} MB JSONL), "
        f"{machine()}, OMP_NUM_THREADS={threads}, {when}, code {code}. Each stage ran in a fresh child process; the time "
        "is the stage call alone (imports excluded), the peak RSS is the child's whole high-water mark "
        "(interpreter and imports included; 'RSS before call' is that part)."
    )
    print()
    print(
        "| stage | rows in | rows out | s | rows/s | RSS before call MB | peak RSS MB | peak RSS / input | output MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for stage, r in results.items():
        if stage in failed:
            print(
                f"| {labels[stage]} | | | failed after {r['process_wall']:.0f} s: {r['failed']} | | | "
                f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / input_mb:.2f}× | |"
            )
            continue
        print(
            f"| {labels[stage]} | {r['rows_in']:,} | {r['rows_out']:,} | {r['seconds']:.1f} | "
            f"{r['rows_in'] / r['seconds']:,.0f} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_rss_mb'] / input_mb:.2f}× | {outputs[stage]:.1f} |"
        )
    if done and not failed:
        peak = max(r["peak_rss_mb"] for r in done.values())
        print(
            f"| **total** | {args.rows:,} | | {total_s:.1f} | {args.rows / total_s:,.0f} | | {peak:.0f} (max) | "
            f"{peak / input_mb:.2f}× | |"
        )
    print()
    print(" ".join(notes))


if __name__ == "__main__":
    main()
