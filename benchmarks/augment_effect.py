"""Does teacher augmentation help the travel demo recipe? (issue 18's measurement)

The travel demo's data through the pipeline's own data stages and split (``pipelines.cli_data.
prepare_splits``: the held-out rows are the demo's, unchanged), then a *reduced seed set*: a seeded share
of the training groups (``--keep-groups``), the same rows in every arm. Arms, each trained with the demo
recipe (``--steps`` etc. shorten it, the same in every arm) and scored on the held-out rows with the
evaluation stage's own generation and scorer (constrained decoding, as the demo's primary figure):

* ``base``: the reduced set alone;
* ``rules``: the reduced set + the paraphrases of the *rules* teacher that the augment stage accepted;
* ``generator``: the same with the *generator* teacher.

There is no LLM on this machine. Both teachers are NOT language models: they are deterministic Python
paraphrasers served by this script over an OpenAI-compatible ``/v1/chat/completions`` loopback server,
and reached through the real ``OpenAICompatibleTeacher`` client (structured output), so augment's own
client, cache, validators and recombination run as they would against a real teacher.

* ``rules``: re-verbalises the user message with phrase tables written in this file (openers and verbs,
  greetings and endings, count digits <-> words, "this Friday" <-> "Friday", letter case of cities, the
  order of comma- or "and"-joined phrases). Its tables were written for this data's surface (they match
  openers such as "Book a" / "I need a" and use travel.py's city, weekday and number vocabularies), but
  its rewrites are not the generator's templates; they keep every value by construction.
* ``generator``: reads the message's meaning with the travel oracle and says it again with the data
  generator's own phrasing helpers (``examples/travel/travel.py`` ``_say_*``). It speaks the data's own
  distribution (templates the held-out rows are written in too), so it is close to an upper bound on what
  a paraphrasing teacher can add here, not an estimate of what an LLM would add.

Augmentation runs through the pipeline's own augment stage (``components.augment.stage.run_stage``, its
options built from the demo config with ``data.augment`` switched on: teacher backend ``openai`` at the
loopback endpoint, ``n``, oracle ``examples.travel.travel:label_row``, a sqlite reply cache in the temp
folder). Neither teacher sees a held-out row: the stage asks only about the reduced training rows. A
paraphrase is kept only if the travel oracle labels it as its original's target, and the stage drops any
paraphrase that exactly or nearly (``data.clean.near_dup_threshold``) repeats a held-out prompt
(AUGMENT_EVAL_LEAK). Prints exact match with a 95% bootstrap CI per run (the gate's bootstrap), the paired
bootstrap CI of each augmented arm against ``base`` on the same training seed, and the augmentation
reports. Measures; asserts nothing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/augment_effect.py [--keep-groups 0.15] [--n 5]
        [--seeds 42 1] [--steps N] [--arms base rules generator]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from loopback_vertex import LoopbackJSON  # noqa: E402  (the loopback JSON server the augment tests use)

from examples.travel import travel  # noqa: E402  (the oracle, parse_prompt and the generator's phrasing)

TEACHERS = ("rules", "generator")

ORACLE = "examples.travel.travel:label_row"  # the labeller augment validates with (data.augment.oracle)


# -- teacher "rules": phrase tables written here ------------------------------------------------------

_NUM = {w: str(i) for i, w in enumerate(travel.NUMBER_WORDS) if i}
_OPENER_SWAPS = [  # (pattern, alternatives); the first matching pattern is rewritten
    (r"^(?:please )?book me an? (flight|hotel|room|table|car)", ["reserve me a {0}", "get me a {0}"]),
    (
        r"^(?:please )?book an? (flight|hotel|table|car)",
        ["reserve a {0}", "I want a {0}", "could you book a {0}", "I'd like a {0}"],
    ),
    (r"^i need an? ", ["I would like a ", "I want a ", "I require a "]),
    (r"^i'd like to ", ["I would like to ", "I want to ", "I wish to "]),
    (r"^find me an? ", ["search for a ", "get me a ", "locate a "]),
    (r"^can you ", ["could you ", "would you ", "can you please "]),
    (r"^looking for an? ", ["I'm looking for a ", "I'm after a ", "searching for a "]),
    (r"^i want to ", ["I'd like to ", "I wish to ", "I would like to "]),
    (r"^rent ", ["hire ", "I'd like to rent "]),
    (r"^reserve ", ["book ", "please reserve "]),
    (r"^make it ", ["change it to ", "let's make it "]),
    (r"^change the ", ["switch the ", "update the "]),
    (r"^move it to ", ["push it to ", "shift it to "]),
    (r"^get me ", ["find me ", "I need "]),
]
_GREETING = re.compile(r"^(?:hi|hello|hey|good (?:morning|evening)|hi there)[,!]?\s+", re.I)
_PREFIX = re.compile(r"^(?:actually|sorry|oh|hmm|wait|no|ok|okay)[,!]?\s+", re.I)
_ENDING = re.compile(r"(?:[,]?\s*(?:please|thanks|thank you|instead))?\s*[.!?]*\s*$", re.I)
_NEW_GREETINGS = ["Hi there, ", "Good morning, ", "Hello, ", "Hey there, ", "Hi, "]
_NEW_PREFIXES = ["Actually, ", "Oh wait, ", "Okay, ", "Sorry, "]
_NEW_ENDINGS = ["", ".", " please.", ", thank you.", ", thanks!", "!", " if you can."]


def _numbers(rng: random.Random, text: str) -> str:
    def swap(m: re.Match[str]) -> str:
        token = m.group(0)
        if token.isdigit():
            return travel.NUMBER_WORDS[int(token)] if 1 <= int(token) <= 12 and rng.random() < 0.7 else token
        return _NUM[token.lower()] if rng.random() < 0.7 else token

    return re.sub(r"(?<![\w-])(?:\d{1,2}|" + "|".join(_NUM) + r")(?![\w:-])", swap, text, flags=re.I)


def _days(rng: random.Random, text: str) -> str:
    days = "|".join(travel.WEEKDAYS)

    def swap(m: re.Match[str]) -> str:
        this, day = m.group(1), m.group(2)
        day = day.capitalize() if rng.random() < 0.7 else day.lower()
        return day if this else (f"this {day}" if rng.random() < 0.3 else day)

    return re.sub(rf"\b(this )?({days})\b", swap, text, flags=re.I)


def _cities(rng: random.Random, text: str) -> str:
    for city in travel.CITIES:
        if rng.random() < 0.3:
            text = re.sub(rf"\b{city}\b", city.lower(), text, flags=re.I)
        else:
            text = re.sub(rf"\b{city}\b", city, text, flags=re.I)
    return text


def _opener(rng: random.Random, body: str) -> str:
    for pattern, options in _OPENER_SWAPS:
        m = re.match(pattern, body, flags=re.I)
        if m:
            new = rng.choice(options).format(*(g.lower() for g in m.groups()))
            return new + body[m.end() :]
    return body


def _reorder(rng: random.Random, body: str) -> str:
    """Shuffle the phrases after the first when the message joins them with ", " or " and "."""
    for joiner in (", ", " and "):
        parts = body.split(joiner)
        if len(parts) >= 3 or (joiner == " and " and len(parts) == 2):
            head, tail = ([], parts) if joiner == " and " else (parts[:1], parts[1:])
            rng.shuffle(tail)
            return joiner.join(head + tail)
    return body


def rules_paraphrase(message: str, rng: random.Random) -> str:
    """One rewrite of ``message``: each rule applied with a probability."""
    body = message.strip()
    greeting = _GREETING.match(body) or _PREFIX.match(body)
    lead = greeting.group(0) if greeting else ""
    body = body[len(lead) :]
    ending = _ENDING.search(body)
    body = body[: ending.start()] if ending and ending.group(0) else body
    question = message.rstrip().endswith("?")
    if rng.random() < 0.7:
        body = _opener(rng, body)
    if rng.random() < 0.5:
        body = _reorder(rng, body)
    body = _numbers(rng, body)
    body = _days(rng, body)
    body = _cities(rng, body)
    if rng.random() < 0.5:
        lead = rng.choice(_NEW_PREFIXES if _PREFIX.match(lead or "x") else [*_NEW_GREETINGS, ""])
    if lead:
        body = body[:1].lower() + body[1:] if not re.match(r"I\b", body) else body
    else:
        body = body[:1].upper() + body[1:]
    end = "?" if question and rng.random() < 0.7 else rng.choice(_NEW_ENDINGS)
    return lead + body + end


# -- teacher "generator": the travel oracle reads the meaning, the generator's _say_* says it again --------


def generator_paraphrase(message: str, state: dict | None, rng: random.Random) -> str | None:
    commands = travel.oracle(message, state)
    if not commands:
        return None
    values = {c["slot"]: c["value"] for c in commands if c["command"] == "set_slot"}
    first = commands[0]
    active = (state or {}).get("flow")
    if first["command"] == "start_flow" and first["flow"] in travel.BOOKING_FLOWS:
        return travel._say_new_request(rng, first["flow"], values)
    if first["command"] == "start_flow":  # cancel_booking / check_status
        with_id = "booking_id" in values
        templates = {
            ("cancel_booking", True): travel._CANCEL_BOOKING_WITH_ID,
            ("cancel_booking", False): travel._CANCEL_BOOKING_WITHOUT_ID,
            ("check_status", True): travel._STATUS_WITH_ID,
            ("check_status", False): travel._STATUS_WITHOUT_ID,
        }[(first["flow"], with_id)]
        return travel._say_with_id(rng, templates, values.get("booking_id"))
    if first["command"] == "cancel_flow":
        return travel._say_abort(rng)
    if first["command"] == "set_slot" and active:
        return travel._say_follow_up(rng, active, values)
    if first["command"] == "clarify":
        flows = first["flows"]
        either = flows if len(flows) == 2 and flows != travel.clarify_candidates(values) else None
        return travel._say_clarify(rng, either, values)
    return None


def paraphrases(teacher: str, prompt: str, n: int) -> list[str]:
    """``n`` distinct rewrites of a travel prompt (its state line kept as it is), fewer if the rules give
    fewer. Seeded by the prompt: the same question gets the same answer."""
    message, state = travel.parse_prompt(prompt)
    line = prompt[: len(prompt) - len(message)]  # the state line and its newline, or ""
    rng = random.Random(int(hashlib.sha256(f"{teacher}\n{prompt}".encode()).hexdigest()[:16], 16))
    out: list[str] = []
    for _ in range(8 * n):
        if len(out) == n:
            break
        try:
            text = (
                rules_paraphrase(message, rng)
                if teacher == "rules"
                else generator_paraphrase(message, state, rng)
            )
        except (ValueError, KeyError, IndexError):  # a slot the generator never says (time, nights)
            text = None
        if text and text != message and line + text not in out:
            out.append(line + text)
    return out


def teacher_answer(path: str, body: dict) -> tuple[int, dict]:
    """An OpenAI-compatible ``/v1/chat/completions`` answer whose "model" names the teacher (``rules`` or
    ``generator``): augment's rephrase request for the user message after "User message:\\n" gets
    {"paraphrases": [...]}, JSON as the json_schema response_format asks. Served on 127.0.0.1 by the
    tests' LoopbackJSON."""
    ask = body["messages"][-1]["content"]
    n = int(re.search(r"in (\d+) different ways", ask).group(1))
    found = paraphrases(body["model"], ask.split("User message:\n", 1)[-1], n)
    content = json.dumps({"paraphrases": found}, ensure_ascii=False)
    return 200, {
        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(ask.split()), "completion_tokens": len(content.split())},
    }


# -- the measurement ----------------------------------------------------------------------------------


def reduce_groups(rows: list[dict], share: float, seed: int) -> list[dict]:
    """The rows of a seeded ``share`` of the groups (at least one group), in their order."""
    groups = sorted({r["group"] for r in rows})
    kept = set(random.Random(seed).sample(groups, max(1, round(share * len(groups)))))
    return [r for r in rows if r["group"] in kept]


def mean_ci(values: list[float], boot: dict) -> tuple[float, float, float]:
    """Mean and bootstrap CI of per-example scores: the gate's bootstrap against a zero baseline."""
    from components.gate.bootstrap import paired_bootstrap

    return paired_bootstrap(values, [0.0] * len(values), **boot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep-groups", type=float, default=0.15, help="share of training groups kept")
    parser.add_argument("--reduce-seed", type=int, default=0, help="seed of the kept groups")
    parser.add_argument("--n", type=int, default=5, help="paraphrases asked per user turn")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1], help="training seeds (train.seed)")
    parser.add_argument("--arms", nargs="+", default=["base", *TEACHERS], choices=["base", *TEACHERS])
    parser.add_argument("--steps", type=int, help="override train.max_steps (the same in every arm)")
    parser.add_argument("--batch-size", type=int, help="override train.batch_size")
    parser.add_argument("--lr", type=float, help="override train.learning_rate")
    parser.add_argument(
        "--decoding", default="constrained", help="eval decoding (the demo's primary is constrained)"
    )
    parser.add_argument("--augment-only", action="store_true", help="augment and report; train nothing")
    a = parser.parse_args()

    from runinfo import code_version, machine

    with tempfile.TemporaryDirectory(prefix="slmforge-augment-") as tmp:
        os.environ["SLMFORGE_HOME"] = tmp
        from components.augment.core import report_markdown
        from components.augment.stage import AugmentOptions, run_stage
        from components.common.config_load import load_config
        from components.common.scoring import TaskSpec
        from components.common.tables import read_rows, write_rows
        from components.common.tiny import ensure_tiny_model
        from components.evaluate.core import evaluate
        from components.gate.bootstrap import paired_bootstrap
        from components.train.core import TrainOptions, train
        from pipelines.cli_data import prepare_splits
        from pipelines.parameters import stage_options

        cfg = load_config(REPO / "examples" / "travel" / "config.yaml")
        task = TaskSpec(cfg.task.type, cfg.task.output_schema, list(cfg.task.labels))
        b = cfg.gates.bootstrap
        boot = {"resamples": b.resamples, "seed": b.seed, "confidence": b.confidence}
        start = time.perf_counter()
        train_path, eval_path = prepare_splits(cfg, Path(tmp) / "data")
        full, held_out = read_rows(train_path), read_rows(eval_path)
        seed_rows = reduce_groups(full, a.keep_groups, a.reduce_seed)
        print(f"# augment_effect: {machine()}; {code_version()}")
        print(
            f"data: demo split (seed {cfg.data.split.seed}): {len(full)} training rows, {len(held_out)} "
            f"held out; reduced seed set: {len(seed_rows)} rows in "
            f"{len({r['group'] for r in seed_rows})} of {len({r['group'] for r in full})} groups "
            f"(--keep-groups {a.keep_groups}, seed {a.reduce_seed})"
        )

        seed_path = write_rows(seed_rows, Path(tmp) / "seed.parquet") and Path(tmp) / "seed.parquet"
        train_paths = {"base": seed_path}
        rows_of = {"base": len(seed_rows)}
        reports = {}
        server = LoopbackJSON(teacher_answer)
        try:
            for name in [arm for arm in a.arms if arm in TEACHERS]:
                t0 = time.perf_counter()
                # data.augment as a user would declare it for an OpenAI-compatible teacher, then the
                # pipeline's augment stage (components/augment/stage.py run_stage) with its options
                teacher = {"backend": "openai", "endpoint": server.url, "model": name}
                augment_cfg = {
                    "enabled": True,
                    "n": a.n,
                    "oracle": ORACLE,
                    "cache": str(Path(tmp) / "cache.sqlite"),
                }
                run_cfg = cfg.model_copy(
                    update={
                        "data": cfg.data.model_copy(
                            update={
                                "augment": cfg.data.augment.model_copy(
                                    update={
                                        **augment_cfg,
                                        "teacher": cfg.data.augment.teacher.model_copy(update=teacher),
                                    }
                                )
                            }
                        )
                    }
                )
                opts = stage_options(AugmentOptions, "augment", run_cfg)
                out = Path(tmp) / f"train-{name}.parquet"
                result = run_stage(seed_path, eval_path, out, opts)
                train_paths[name], rows_of[name], reports[name] = out, len(result.rows), result
                print(
                    f"\n## teacher {name!r} (not an LLM: see the module docstring), "
                    f"{time.perf_counter() - t0:.0f} s, {len(server.requests)} requests served so far"
                )
                print(report_markdown(result))
                added = result.rows[len(seed_rows) :]
                for r in added[:: max(1, len(added) // 6)][:6]:
                    print(f"  e.g. {r['prompt']!r}")
        finally:
            server.close()
        prepared = time.perf_counter()
        print(f"data and augmentation: {prepared - start:.0f} s")
        if a.augment_only:
            return

        ensure_tiny_model(cfg.model.base)
        asked = {"max_steps": a.steps, "batch_size": a.batch_size, "learning_rate": a.lr}
        results: dict[tuple[str, int], dict] = {}
        for seed in a.seeds:
            for arm in a.arms:
                opts = stage_options(
                    TrainOptions,
                    "train",
                    cfg,
                    seed=seed,
                    **{k: v for k, v in asked.items() if v is not None},
                )
                run = Path(tmp) / f"{arm}-{seed}"
                t0 = time.perf_counter()
                trained = train(train_paths[arm], cfg.model.base, cfg.task.system_prompt, opts, run / "model")
                t1 = time.perf_counter()
                scored = evaluate(
                    str(run / "model"),
                    eval_path,
                    cfg.task.system_prompt,
                    task,
                    run / "predictions.parquet",
                    max_new_tokens=cfg.eval.max_new_tokens,
                    batch_size=cfg.eval.batch_size,
                    decoding=a.decoding,
                )
                t2 = time.perf_counter()
                em = scored.scored.per_example["exact_match"]
                results[(arm, seed)] = {
                    "rows": rows_of[arm],
                    "em": em,
                    "ci": mean_ci(em, boot),
                    "field_match": scored.metrics.get("field_match", float("nan")),
                    "schema_validity": scored.metrics.get("schema_validity", float("nan")),
                    "loss": trained.final_loss,
                    "train_s": t1 - t0,
                    "eval_s": t2 - t1,
                }
                r = results[(arm, seed)]
                versus = ""
                if arm != "base" and ("base", seed) in results:
                    d, lo, hi = paired_bootstrap(em, results[("base", seed)]["em"], **boot)
                    versus = f", vs base {d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                print(
                    f"run {arm} seed {seed}: {r['rows']} rows, exact_match {r['ci'][0]:.3f} "
                    f"[{r['ci'][1]:.3f}, {r['ci'][2]:.3f}]{versus}, loss {r['loss']:.4f}, "
                    f"train {r['train_s']:.0f} s, eval {r['eval_s']:.0f} s",
                    flush=True,
                )
                shutil.rmtree(run / "model", ignore_errors=True)

    conf = boot["confidence"]
    print(
        f"\nrecipe: {opts.max_steps} steps x batch {opts.batch_size}, lr {opts.learning_rate:g}, "
        f"weight decay {opts.weight_decay:g}; decoding {a.decoding}; {len(held_out)} held-out rows; "
        f"CIs: bootstrap, {boot['resamples']} resamples, {conf:.0%}"
    )
    print(
        "\n| arm | train rows | train seed | exact_match [CI] | vs base, same seed: diff [paired CI] "
        "| field_match | train s |"
    )
    print("|---|---:|---:|---|---|---:|---:|")
    for seed in a.seeds:
        for arm in a.arms:
            r = results[(arm, seed)]
            diff = "—"
            if arm != "base" and ("base", seed) in results:
                d, lo, hi = paired_bootstrap(r["em"], results[("base", seed)]["em"], **boot)
                diff = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            em, lo, hi = r["ci"]
            print(
                f"| {arm} | {r['rows']} | {seed} | {em:.3f} [{lo:.3f}, {hi:.3f}] | {diff} | "
                f"{r['field_match']:.3f} | {r['train_s']:.0f} |"
            )
    for arm in a.arms:
        ems = [results[(arm, s)]["ci"][0] for s in a.seeds]
        print(f"mean over seeds, {arm}: {sum(ems) / len(ems):.3f} ({', '.join(f'{e:.3f}' for e in ems)})")
    for name, result in reports.items():
        rep = result.report()
        print(
            f"augment {name}: asked {rep['asked']}, received {rep['received']}, accepted {rep['accepted']} "
            f"({rep['acceptance_rate']:.1%}), rejected {dict(result.rejected)}, rows added {rep['added']}"
        )
    print(f"total wall: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
