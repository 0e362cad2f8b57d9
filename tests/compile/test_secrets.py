"""Nothing secret is ever a pipeline parameter: a compiled YAML travels (CI artifacts, Vertex's pipeline
templates, the console shows every parameter of every run). The scanner reads every parameter default, every
container env var and every parameter name in every compiled pipeline; the test plants secrets to show it
finds them."""

import copy
import math
import re
from collections import Counter

import pytest
import yaml

from components.common.secrets import PATTERNS  # the product's own patterns

SECRET_NAME = re.compile(
    r"(?i)(?:^|_)(?:password|passwd|secret|token|api_?key|credentials?|private_key)(?:_|$)"
)
TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{20,}")


def _entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _high_entropy(text: str) -> list[str]:
    """Random-looking tokens: 20+ characters of base64 at >= 4.5 bits/char, or 32+ hex digits at >= 3.5
    (the thresholds secret scanners such as truffleHog use for base64 and hex)."""
    found = []
    for token in TOKEN.findall(text):
        if re.fullmatch(r"[0-9a-fA-F]+", token):
            if len(token) >= 32 and _entropy(token) >= 3.5:
                found.append(token)
        elif _entropy(token) >= 4.5:
            found.append(token)
    return found


def _values(doc, path=""):
    """(where, name, value) of every parameter default and env var in a compiled YAML document, and every
    parameter name (value None)."""
    if isinstance(doc, dict):
        if path.endswith(".parameters"):
            for name, definition in doc.items():
                yield f"{path}.{name}", name, None
                if isinstance(definition, dict) and "defaultValue" in definition:
                    yield f"{path}.{name}.defaultValue", name, definition["defaultValue"]
        for key, value in doc.items():
            if key == "env" and isinstance(value, list):
                for var in value:
                    yield f"{path}.env.{var.get('name')}", var.get("name", ""), var.get("value", "")
            else:
                yield from _values(value, f"{path}.{key}")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _values(value, f"{path}[{i}]")


def find_secrets(documents: list) -> list[str]:
    """Every finding as ``where: what``; [] for a clean pipeline."""
    findings = []
    for doc in documents:
        for where, name, value in _values(doc):
            if value is None:
                if SECRET_NAME.search(name):
                    findings.append(f"{where}: a parameter named like a secret")
                continue
            text = value if isinstance(value, str) else yaml.safe_dump(value)
            findings += [f"{where}: {what}" for what, pattern in PATTERNS if pattern.search(text)]
            findings += [f"{where}: high-entropy string {t[:8]}..." for t in _high_entropy(text)]
    return findings


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, list]:
    from pipelines.compiler import compile_all

    paths = compile_all(tmp_path_factory.mktemp("compiled"))
    return {p.stem: list(yaml.safe_load_all(p.read_text())) for p in paths}


def test_no_compiled_pipeline_holds_a_secret(compiled):
    assert set(compiled) == {"finetune", "finetune-multinode", "evaluate"}
    for name, documents in compiled.items():
        scanned = list(_values(documents[0]))
        assert sum(v is not None for _, _, v in scanned) > 25, name  # the defaults were reached
        assert find_secrets(documents) == [], name


# Planted secrets: made up here, shaped like the real thing.
PLANTED = {
    "private key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n-----END RSA PRIVATE KEY-----",
    "service account key": '{"type": "service_account", "project_id": "p", "private_key_id": "1"}',
    "Google API key": "AIza" + "Sy" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7",
    "AWS access key id": "AKIA" + "IOSFODNN7EXAMPLE",
    "credential assignment": "host=db.internal password=hunter2",
    "credentials in a URI": "postgresql://admin:s3cret@db.internal:5432/runs",
    "high-entropy string": "q8Vz3LpX9rT2mK7wB4nY6cF1hJ5dG0sA",
}


@pytest.mark.parametrize("what", sorted(PLANTED))
def test_the_scanner_finds_a_planted_secret_in_a_default(compiled, what):
    documents = copy.deepcopy(compiled["finetune"])
    documents[0]["root"]["inputDefinitions"]["parameters"]["system_prompt"]["defaultValue"] = PLANTED[what]
    findings = find_secrets(documents)
    assert findings and all(
        ".root.inputDefinitions.parameters.system_prompt.defaultValue" in f for f in findings
    )
    assert any(what in f for f in findings), findings


def test_the_scanner_finds_env_vars_secret_names_and_compiled_defaults(tmp_path):
    """A planted secret in a container env var, a parameter named like a secret, and a secret default
    compiled by KFP itself (the YAML path the real pipelines take)."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11")
    def echo(text: str) -> str:
        return text

    @dsl.pipeline(name="leaky")
    def leaky(endpoint: str = "https://user:pa55word@example.com/api", hf_token: str = ""):
        echo(text=endpoint).set_env_variable("AUTH", "token=" + "abc123def456")

    path = tmp_path / "leaky.yaml"
    compiler.Compiler().compile(leaky, str(path))
    findings = find_secrets(list(yaml.safe_load_all(path.read_text())))
    assert any(".parameters.endpoint.defaultValue: credentials in a URI" in f for f in findings), findings
    assert any(".parameters.hf_token: a parameter named like a secret" in f for f in findings), findings
    assert any(".env.AUTH: credential assignment" in f for f in findings), findings


def test_the_scanner_leaves_ordinary_values_alone():
    doc = {
        "root": {
            "inputDefinitions": {
                "parameters": {
                    "max_tokens": {"defaultValue": 256},
                    "eval_max_new_tokens": {"defaultValue": 128},
                    "config_hash": {"defaultValue": ""},
                    "pii_types": {"defaultValue": "EMAIL,PHONE,CREDIT_CARD,IBAN,IP_ADDRESS"},
                    "base_model": {"defaultValue": "Qwen/Qwen2.5-0.5B-Instruct"},
                    "gate_bootstrap": {"defaultValue": '{"confidence": 0.95, "resamples": 2000, "seed": 0}'},
                    "lora_target_modules": {
                        "defaultValue": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
                    },
                }
            }
        }
    }
    assert find_secrets([doc]) == []
