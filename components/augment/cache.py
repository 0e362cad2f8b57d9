"""A sqlite cache of teacher replies, so a rerun calls nothing already answered.

Key: (sha256 of the request text, teacher id, sha256 of the prompt template). The request text is what
varies per call (the user message to rephrase, or the conversation to label); the template hash covers
everything fixed around it (the template, n, the output format). Only answered calls are stored: a
timeout, a refusal or an error is asked again on the next run.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

from components.augment.teachers import TeacherReply


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class TeacherCache:
    """``path``: a sqlite file (created with its folder), or ":memory:". Safe to share between threads."""

    def __init__(self, path: str | Path = ":memory:"):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replies (request TEXT, teacher TEXT, template TEXT, text TEXT, "
            "input_tokens INTEGER, output_tokens INTEGER, PRIMARY KEY (request, teacher, template))"
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(request: str, teacher_id: str, template: str) -> tuple[str, str, str]:
        return sha256(request), teacher_id, sha256(template)

    def get(self, key: tuple[str, str, str]) -> TeacherReply | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, input_tokens, output_tokens FROM replies "
                "WHERE request = ? AND teacher = ? AND template = ?",
                key,
            ).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            return TeacherReply(*row)

    def contains(self, key: tuple[str, str, str]) -> bool:
        """Whether the key is answered, without counting a hit or a miss (a dry run)."""
        with self._lock:
            query = "SELECT 1 FROM replies WHERE request = ? AND teacher = ? AND template = ?"
            return self._db.execute(query, key).fetchone() is not None

    def put(self, key: tuple[str, str, str], reply: TeacherReply) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                (*key, reply.text, reply.input_tokens, reply.output_tokens),
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TeacherCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
