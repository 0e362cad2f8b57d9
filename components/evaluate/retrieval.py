"""The retrieval baseline: answer each eval prompt with the answer of the most similar training prompt.

Similarity is token overlap: the Jaccard index of the lower-cased word sets (``\\w+``) of the two prompts;
ties go to the earlier training row. A candidate that does not beat this has learned little beyond
looking up near neighbours. It is scored by the same task scorer on the same eval rows as the models.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from pathlib import Path

from components.common.scoring import TaskSpec, score
from components.common.tables import read_rows

_WORD = re.compile(r"\w+")


def words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def nearest_answers(train_rows: list[dict], eval_rows: list[dict]) -> list[str]:
    """For every eval row, the completion of the training row whose prompt overlaps it most."""
    if not train_rows:
        raise ValueError("the retrieval baseline needs training rows; the train split is empty")
    train_words = [words(r["prompt"]) for r in train_rows]
    index: dict[str, list[int]] = defaultdict(list)
    for i, ws in enumerate(train_words):
        for w in ws:
            index[w].append(i)
    answers = []
    for row in eval_rows:
        query = words(row["prompt"])
        shared = Counter(i for w in query for i in index.get(w, ()))
        best, best_score = 0, -1.0
        for i, inter in sorted(shared.items()):
            jaccard = inter / (len(query) + len(train_words[i]) - inter)
            if jaccard > best_score:
                best, best_score = i, jaccard
        answers.append(train_rows[best]["completion"])
    return answers


def evaluate_retrieval(
    train_path: str | Path,
    eval_path: str | Path,
    system_prompt: str,
    task: TaskSpec,
    predictions_path: str | Path,
    *,
    max_examples: int = -1,
):
    """Score the retrieval baseline like a model (components/evaluate/core.py EvalResult)."""
    from components.evaluate.core import EvalResult, task_settings, write_predictions

    rows = read_rows(eval_path)
    if max_examples >= 0:
        rows = rows[:max_examples]
    start = time.perf_counter()
    predicted = nearest_answers(read_rows(train_path), rows)
    elapsed = time.perf_counter() - start
    scored = score(task, predicted, [r["completion"] for r in rows])
    write_predictions(rows, predicted, scored, predictions_path)
    settings = {**task_settings(task, eval_path), "decoding": "retrieval", "examples": len(rows)}
    return EvalResult(dict(scored.metrics), len(rows), elapsed, settings, scored)
