"""`slmforge data inspect` and `slmforge data map`, through the real CLI app (typer's runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "travel" / "config.yaml"
runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_inspect_picks_the_demo_shape():
    code, out = invoke("data", "inspect", REPO / "examples/travel/data/travel.jsonl")
    assert code == 0, out
    assert "prompt_completion" in out and "0.98" in out and "auto-picks prompt_completion" in out


def test_inspect_refuses_a_guess_without_force(tmp_path):
    src = tmp_path / "qa.csv"
    src.write_text("question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(5)))
    code, out = invoke("data", "inspect", src)
    assert code == 1 and "no shape reaches confidence 0.8" in out and "data.fields" in out
    code, out = invoke("data", "inspect", src, "--force")
    assert code == 0 and "--force takes prompt_completion" in out
    assert "data.fields: {prompt: question, completion: answer}" in out


VALID = '[{"command":"start_flow","flow":"book_table"}]'


@pytest.fixture()
def messy_config(tmp_path, travel_rows) -> Path:
    rows = [json.dumps({k: r[k] for k in ("id", "group", "prompt", "completion")}) for r in travel_rows[:40]]
    rows += [
        "{broken",
        json.dumps({"id": "pii", "prompt": "Book a table, mail me at a.b@example.com", "completion": VALID}),
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(rows) + "\n")
    raw = yaml.safe_load(DEMO.read_text())
    raw["data"] = {"train": str(tmp_path / "data.jsonl"), "clean": {"max_tokens": -1}}
    raw["task"]["schema"] = str(DEMO.parent / "schema.json")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_map_dry_run_shows_sample_and_rejects_and_writes_nothing(messy_config, tmp_path):
    code, out = invoke("data", "map", "--config", messy_config, "--out", tmp_path / "out")
    assert code == 1, out  # a run would stop: scripts can rely on the exit code
    assert "shape: prompt_completion" in out and "accepted rows (first 5)" in out
    assert "NOT_JSON" in out and "train:41" in out  # the broken line, by source and line number
    assert "DUPLICATE" in out  # travel rows 15 and 16 differ only in case
    assert "42 rows in = 40 accepted + 2 rejected; PII redacted in 1 rows ({'EMAIL': 1})" in out
    assert "a run would stop here: 1 of 42 rows rejected" in out  # 2.38% > the default 1%
    assert "(1 duplicates removed by clean are not counted against the limit.)" in out
    assert not (tmp_path / "out").exists()


def test_map_commit_writes_a_canonical_table_that_ingests_again(tmp_path):
    rows = [
        {
            "id": f"c{i}",
            "messages": [
                {"role": "user", "content": f"Table for {i} in Rome"},
                {"role": "assistant", "content": VALID},
                {"role": "user", "content": f"Make it {i} people at {i % 12 + 1} pm, booking number {i * 7}"},
                {
                    "role": "assistant",
                    "content": json.dumps([{"command": "set_slot", "slot": "people", "value": str(i)}]),
                },
            ],
        }
        for i in range(30)
    ]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    raw = yaml.safe_load(DEMO.read_text())
    raw["data"] = {"train": str(tmp_path / "chat.jsonl"), "max_reject_rate": 0.5, "clean": {"max_tokens": -1}}
    raw["task"]["schema"] = str(DEMO.parent / "schema.json")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    out_dir = tmp_path / "out"
    code, out = invoke("data", "map", "--config", tmp_path / "c.yaml", "--commit", "--out", out_dir)
    assert code == 0, out
    assert "shape: messages" in out and f"parquet:{out_dir / 'dataset.parquet'}" in out.replace("\n", "")
    assert {p.name for p in out_dir.iterdir()} == {"dataset.parquet", "rejects.jsonl", "events.jsonl"}
    # the committed table is itself a locator: history survives a second ingest
    raw["data"]["train"] = f"parquet:{out_dir / 'dataset.parquet'}"
    (tmp_path / "c2.yaml").write_text(yaml.safe_dump(raw))
    code, out = invoke("data", "map", "--config", tmp_path / "c2.yaml")
    assert code == 0 and "shape: prompt_completion" in out and "2 turns" in out, out


def test_preflight_command_on_the_demo(tmp_path):
    code, out = invoke("preflight", DEMO, "--out", tmp_path / "pf")
    assert code == 0, out
    plan = json.loads((tmp_path / "pf" / "plan.json").read_text())
    assert plan["micro_batch"] * plan["grad_accum"] == 16 and plan["passed"]  # the demo's train.batch_size
    code, out = invoke("preflight", DEMO, "--method", "full", "--accelerator", "NVIDIA_L4", "--count", "3")
    assert code == 1 and "NO_MACHINE_TYPE" in out


def test_map_with_every_row_rejected_keeps_the_rejects_and_fails(tmp_path, messy_config):
    rows = [{"id": str(i), "prompt": "p", "completion": "not json"} for i in range(3)]
    (tmp_path / "data.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n{broken\n")
    code, out = invoke("data", "map", "--config", messy_config, "--commit", "--out", tmp_path / "out")
    assert code == 1 and "Traceback" not in out, out
    assert "no usable rows" in out and "rejects written to" in out
    codes = [json.loads(x)["code"] for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert codes == ["TARGET_NOT_JSON"] * 3 + ["NOT_JSON"]


def test_map_says_what_max_length_would_keep_every_row(tmp_path, messy_config):
    raw = yaml.safe_load(messy_config.read_text())
    raw["data"]["clean"] = {"max_tokens": 60}
    messy_config.write_text(yaml.safe_dump(raw))
    _, out = invoke("data", "map", "--config", messy_config)
    line = next(x for x in out.splitlines() if x.startswith("tokens per example:"))
    assert "(limit 60)" in line and "rows are longer: train.max_length" in line, line
    longest = int(line.split("max ")[1].split(" ")[0])
    assert line.endswith(f"train.max_length {longest} would keep every row") and longest > 60
