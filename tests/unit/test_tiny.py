"""tiny://travel: built offline, deterministic, and a well-formed chat model (pad != eos, no BOS)."""

from __future__ import annotations

import pytest

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


def test_pickle_only_or_custom_code_model_folders_are_refused_at_the_first_load(tmp_path, tiny_model):
    """A folder whose weights are only a torch.save pickle, or whose config asks to run its own code, is
    refused before anything is loaded, by evaluation, preflight and training alike: nothing waits on an
    interactive "run custom code? [y/N]" prompt."""
    import json
    import shutil

    import torch

    from components.common.models import UnsafeModelError, load_for_inference
    from components.preflight.memory import load_model_config

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    with pytest.raises(UnsafeModelError, match=r"\[MODEL-005\].*pytorch_model.bin"):
        load_for_inference(str(pickled))

    custom = tmp_path / "custom"
    shutil.copytree(tiny_model, custom)
    config = json.loads((custom / "config.json").read_text())
    config.update(auto_map={"AutoConfig": "mine.MyConfig"}, model_type="mine-unknown")
    (custom / "config.json").write_text(json.dumps(config))
    for load in (load_for_inference, load_model_config):
        with pytest.raises(UnsafeModelError, match=r"\[MODEL-006\]"):
            load(str(custom))
