"""``tiny://<example>``: a random-init stand-in model, built offline so the demo and tests need no hub.

It is NOT a pretrained model: a byte-level BPE tokenizer trained on the example's own text plus a
seeded 2-layer Qwen2-style config (hidden 64, untied embeddings) with random weights (~0.2 M parameters). Fine-tuning it
teaches the task from scratch, which is enough to exercise every stage for real. Point
``model.base`` at a real checkpoint (hub id, local dir, gs:// dir) for real work.

The build is deterministic (same example data + seed = same tokenizer and weights) and cached under
``$SLMFORGE_HOME/models/tiny-<name>``; it is written to a temporary folder and renamed into place,
so a half-built model is never picked up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from components.common.home import repo_root, slmforge_home

TINY_PREFIX = "tiny://"
PAD, EOS, IM_START = "<|pad|>", "<|im_end|>", "<|im_start|>"
# AutoTokenizer loads this folder as a Qwen2Tokenizer (from the model type), which adds <|endoftext|>
# as unk when the vocabulary lacks it, silently growing the vocabulary past the embedding size.
UNK = "<|endoftext|>"
# ChatML, as Qwen models use it: no BOS token; eos is <|im_end|> so generation stops after one turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
BUILD_VERSION = 4  # bump when the recipe changes: the cache key includes it


def tiny_name(base: str) -> str:
    return base.removeprefix(TINY_PREFIX).strip("/")


def example_corpus(name: str) -> Iterator[str]:
    """The text the tokenizer is trained on: the system prompt of the example's config.yaml (repeated, so
    it merges into few tokens like the rest of the task's text) and every string in its JSONL data."""
    folder = repo_root() / "examples" / name
    files = sorted((folder / "data").glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"tiny://{name}: no examples/{name}/data/*.jsonl to train a tokenizer on; "
            "use the name of a folder under examples/ that ships data"
        )

    def strings(value: object) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    config = folder / "config.yaml"
    if config.is_file():
        import yaml

        system_prompt = (yaml.safe_load(config.read_text(encoding="utf-8")).get("task") or {}).get(
            "system_prompt"
        )
        if system_prompt:
            yield from [system_prompt] * 100
    yield from ["system", "user", "assistant"] * 100  # the chat template's role names
    for f in files:
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield from strings(json.loads(line))


def build_tiny_model(
    corpus: Iterable[str],
    out_dir: str | Path,
    *,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    tie_embeddings: bool = False,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on ``corpus`` and save it with a seeded random Qwen2 model into ``out_dir``."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    # The pre-tokenization Qwen2Tokenizer applies when AutoTokenizer loads this folder (it re-sets it from
    # the model type): training the merges under the same split keeps them valid. It puts every digit in
    # a token of its own, so numbers are copied digit by digit. Byte-level: any text is encodable.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, IM_START, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=[IM_START],
        model_max_length=1024,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE

    out = Path(out_dir)
    fast.save_pretrained(out)
    fast = AutoTokenizer.from_pretrained(out)  # size the model by what every stage will load
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        # Untied by default: tied, this random-init model did not learn to copy a token that is the same in
        # prompt and answer (a digit) within hundreds of steps; untied, it did (benchmarks/tiny_copy.py,
        # results in benchmarks/RESULTS.md). Real Qwen2 checkpoints of 0.5B-1.5B are tied.
        tie_word_embeddings=tie_embeddings,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = fast.pad_token_id
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    return out


def ensure_tiny_model(base: str) -> Path:
    """Return the cached folder of ``tiny://<name>``, building it first when missing."""
    name = tiny_name(base)
    target = slmforge_home() / "models" / f"tiny-{name}-v{BUILD_VERSION}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tiny-{name}-", dir=target.parent))
    try:
        build_tiny_model(example_corpus(name), tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
