"""tiny://travel: built offline, deterministic, and a well-formed chat model (pad != eos, no BOS)."""

from __future__ import annotations

from components.common.provenance import sha256_path
from components.common.tiny import CHAT_TEMPLATE, build_tiny_model, ensure_tiny_model, example_corpus


def test_cached_build_loads_through_auto_classes(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.eos_token == "<|im_end|>" and tok.bos_token is None
    assert tok.chat_template == CHAT_TEMPLATE
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert not model.config.tie_word_embeddings
    assert model.config.vocab_size == len(tok)
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 1_000_000
    # digits are one token each, so numbers are copied digit by digit
    assert [t.strip("Ġ") for t in tok.tokenize("2026") if t.strip("Ġ")] == ["2", "0", "2", "6"]


def test_second_call_uses_the_cache(tiny_model):
    before = sha256_path(tiny_model)
    assert ensure_tiny_model("tiny://travel") == tiny_model
    assert sha256_path(tiny_model) == before


def test_build_is_deterministic(tmp_path):
    corpus = list(example_corpus("travel"))[:2000]
    a = build_tiny_model(corpus, tmp_path / "a", seed=3)
    b = build_tiny_model(corpus, tmp_path / "b", seed=3)
    c = build_tiny_model(corpus, tmp_path / "c", seed=4)
    assert sha256_path(a) == sha256_path(b)
    assert sha256_path(a) != sha256_path(c)


def test_unknown_example_is_a_clear_error():
    import pytest

    with pytest.raises(FileNotFoundError, match="tiny://nope: no examples/nope/data"):
        ensure_tiny_model("tiny://nope")
