"""Constrained decoding (components/evaluate/constrained.py) on the real, untrained tiny://travel model:
free greedy decoding of a random model is garbage; under the travel schema every finished answer is valid
JSON against it, under a label set every answer is one of the labels, and batching changes nothing."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("xgrammar")

LABELS = ["billing", "technical", "account"]
JSON_BUDGET = 256  # generous: the random model mostly closes its strings well before this


@pytest.fixture(scope="module")
def model_tok(tiny_model):
    from components.common.models import load_for_inference

    return load_for_inference("tiny://travel")


@pytest.fixture(scope="module")
def prompts(model_tok, travel_config, travel_rows) -> list[list[int]]:
    """16 travel prompts spread over the file (different intents), as the evaluator tokenizes them."""
    from components.common.task import prompt_token_ids

    _, tok = model_tok
    rows = travel_rows[:: len(travel_rows) // 16][:16]
    return [prompt_token_ids(tok, travel_config.task.system_prompt, r["prompt"]) for r in rows]


@pytest.fixture(scope="module")
def json_factory(model_tok, travel_schema):
    from components.evaluate.constrained import logits_processor_factory

    return logits_processor_factory(model_tok[1], json_schema=travel_schema)


def generate_rows(model, tok, prompts, max_new_tokens, processors) -> list[tuple[list[int], bool]]:
    """One left-padded greedy batch straight through ``model.generate``: per row, the generated ids (up to
    EOS) and whether it emitted EOS (finished) rather than running out of budget."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            logits_processor=processors,
        )
    rows = []
    for new in out[:, width:].tolist():
        ended = tok.eos_token_id in new
        rows.append((new[: new.index(tok.eos_token_id)] if ended else new, ended))
    return rows


def schema_valid(text: str, schema: dict) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def test_free_decoding_is_invalid_but_constrained_decoding_is_schema_valid(
    model_tok, prompts, json_factory, travel_schema
):
    from components.evaluate.core import generate

    model, tok = model_tok
    free, _ = generate(model, tok, prompts, 64, batch_size=16)
    assert not any(schema_valid(t, travel_schema) for t in free), free

    rows = generate_rows(model, tok, prompts, JSON_BUDGET, json_factory(len(prompts)))
    finished = [tok.decode(ids, skip_special_tokens=True) for ids, ended in rows if ended]
    # The grammar cannot force a random model to close a string; the budget is generous, so most do
    # (all 16 here, the longest in 182 tokens, when written). Every answer that finished is valid.
    assert len(finished) >= 12, rows
    bad = [t for t in finished if not schema_valid(t, travel_schema)]
    assert not bad, bad
    # Compact, as the training targets are: no whitespace or control characters outside strings.
    assert all(json.dumps(json.loads(t), separators=(",", ":"), ensure_ascii=False) == t for t in finished)
    # An answer without EOS was cut off by the budget, not a finished document left running: EOS is
    # forced as soon as the grammar is complete.
    for ids, ended in rows:
        if not ended:
            with pytest.raises(ValueError):
                json.loads(tok.decode(ids, skip_special_tokens=True))


def test_unique_items_are_enforced(model_tok, travel_schema):
    """xgrammar alone ignores uniqueItems: clarify.flows with a repeated flow must be refused."""
    import xgrammar as xgr

    from components.evaluate.constrained import logits_processor_factory

    factory = logits_processor_factory(model_tok[1], json_schema=travel_schema)
    prefix = '[{"command":"clarify","flows":["book_car",'
    assert xgr.GrammarMatcher(factory.compiled).accept_string(prefix + '"book_hotel"]}]')
    assert not xgr.GrammarMatcher(factory.compiled).accept_string(prefix + '"book_car"')


def test_choices_output_exactly_one_label_then_eos(model_tok, prompts):
    from components.evaluate.constrained import logits_processor_factory
    from components.evaluate.core import generate

    model, tok = model_tok
    factory = logits_processor_factory(tok, choices=LABELS)
    outputs, _ = generate(model, tok, prompts, 16, batch_size=8, logits_processor_factory=factory)
    assert len(outputs) == len(prompts)
    assert all(o in LABELS for o in outputs), outputs

    # EOS right after the label: generation stopped by itself, well inside the budget.
    for ids, ended in generate_rows(model, tok, prompts, 16, factory(len(prompts))):
        assert ended and tok.decode(ids) in LABELS


def test_choices_with_prefixes_and_quotes(model_tok, prompts):
    from components.evaluate.constrained import logits_processor_factory
    from components.evaluate.core import generate

    model, tok = model_tok
    labels = ["refund", "refund_request", 'say "hi"', "a\\b"]
    factory = logits_processor_factory(tok, choices=labels)
    outputs, _ = generate(model, tok, prompts[:8], 24, batch_size=8, logits_processor_factory=factory)
    assert all(o in labels for o in outputs), outputs


@pytest.mark.parametrize("kind", ["json", "choices"])
def test_batched_equals_one_at_a_time(model_tok, prompts, json_factory, kind):
    from components.evaluate.constrained import logits_processor_factory
    from components.evaluate.core import generate

    model, tok = model_tok
    if kind == "json":
        factory, budget, some = json_factory, 64, prompts[:8]
    else:
        factory, budget, some = logits_processor_factory(tok, choices=LABELS), 16, prompts
    batched = generate(model, tok, some, budget, batch_size=len(some), logits_processor_factory=factory)
    single = generate(model, tok, some, budget, batch_size=1, logits_processor_factory=factory)
    assert batched == single


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"json_schema": {"type": "object"}, "choices": ["a", "b"]}],
    ids=["neither", "both"],
)
def test_exactly_one_constraint(model_tok, kwargs):
    from components.evaluate.constrained import logits_processor_factory

    with pytest.raises(ValueError, match=r"exactly one of json_schema=.*or choices="):
        logits_processor_factory(model_tok[1], **kwargs)


@pytest.mark.parametrize("choices", [[], [""], "billing"], ids=["empty", "empty-label", "a-string"])
def test_bad_choices(model_tok, choices):
    from components.evaluate.constrained import logits_processor_factory

    with pytest.raises(ValueError, match="choices must be"):
        logits_processor_factory(model_tok[1], choices=choices)


@pytest.mark.parametrize("rows", [1, 8], ids=["kernel-path", "torch-path"])
def test_first_step_mask_and_padded_vocabulary(model_tok, prompts, json_factory, rows):
    """One processor step on logits wider than the tokenizer (a model whose embedding matrix is padded):
    only tokens that can open the travel JSON (a list) survive, the padding never does."""
    import torch

    _, tok = model_tok
    vocab = json_factory.vocab_size
    width = max(len(p) for p in prompts[:rows])
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts[:rows]])
    scores = json_factory(rows)[0](input_ids, torch.zeros(rows, vocab + 37))
    assert torch.isinf(scores[:, vocab:]).all()
    allowed = [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in scores]
    assert all(a == allowed[0] for a in allowed) and allowed[0]
    assert all(tok.decode([i]).startswith("[") for i in allowed[0]), [tok.decode([i]) for i in allowed[0]]


def test_processor_is_per_batch(model_tok, prompts, json_factory):
    """A processor built for one batch size refuses another (fresh state per generate call)."""
    model, tok = model_tok
    with pytest.raises(ValueError, match=r"factory\(batch_size\)"):
        generate_rows(model, tok, prompts[:4], 4, json_factory(3))


# Declared order is not alphabetical: a sorted schema would force "date" first.
EXTRACTION = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "type": {"enum": ["meeting", "call"]},
        "date": {"enum": ["monday", "friday"]},
    },
    "required": ["name", "type", "date"],
    "additionalProperties": False,
}


def test_constrained_output_keeps_the_schema_declared_key_order(model_tok, prompts):
    """xgrammar emits properties in the order it is given them; the schema reaches it unsorted (through the
    pipeline parameter too), so the constraint and the training targets (canonical_json) agree."""
    from components.common.config_load import parse_config
    from components.evaluate.constrained import logits_processor_factory
    from pipelines.parameters import pipeline_parameters

    raw = {
        "name": "order",
        "task": {"type": "structured", "output_schema": EXTRACTION},
        "data": {"train": "gs://bucket/train.jsonl"},
        "model": {"base": "tiny://travel"},
    }
    schema = json.loads(pipeline_parameters(parse_config(raw))["output_schema"])
    assert list(schema["properties"]) == ["name", "type", "date"]
    model, tok = model_tok
    rows = generate_rows(model, tok, prompts[:4], 64, logits_processor_factory(tok, json_schema=schema)(4))
    finished = [json.loads(tok.decode(ids, skip_special_tokens=True)) for ids, ended in rows if ended]
    assert finished and all(list(v) == ["name", "type", "date"] for v in finished), finished


@pytest.mark.parametrize("constrained", [False, True])
def test_a_static_kv_cache_decodes_exactly_like_the_default(model_tok, prompts, json_factory, constrained):
    """The evaluator's ``generate`` with the static cache (what a GPU can compile) gives the same answers
    and cut-offs as with transformers' default dynamic cache, free and constrained, batch 8."""
    from components.evaluate.core import generate

    model, tok = model_tok
    factory = json_factory if constrained else None
    dynamic = generate(model, tok, prompts, 48, 8, logits_processor_factory=factory)
    static = generate(
        model, tok, prompts, 48, 8, logits_processor_factory=factory, cache_implementation="static"
    )
    assert static == dynamic
    assert len(static[0]) == len(prompts) and any(t for t in static[0])  # answers, not empty strings


def test_the_eval_batch_is_the_configured_one_or_planned(model_tok, prompts):
    from components.evaluate.core import CPU_BATCH, plan_batch_size

    model, _ = model_tok
    assert plan_batch_size(model, prompts, 64, 8) == 8  # configured
    assert plan_batch_size(model, prompts, 64, 0) == CPU_BATCH == 64  # planned on CPU: today's default
