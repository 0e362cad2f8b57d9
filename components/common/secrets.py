"""Secret-looking text: the patterns secret scanners use for keys, tokens and credentials. Nothing secret is
ever a config value or a pipeline parameter (a compiled pipeline, the Vertex console and the MLflow store
show every parameter of every run); credentials come from the environment or Secret Manager."""

from __future__ import annotations

import re

# (what it is, pattern) over a value as text
PATTERNS = [
    ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("service account key", re.compile(r'"type"\s*:\s*"service_account"')),
    ("Google API key", re.compile(r"AIza[0-9A-Za-z_\-]{35}")),
    ("Google OAuth token", re.compile(r"ya29\.[0-9A-Za-z_\-]{20,}")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[0-9A-Za-z]{36,}")),
    (
        "credential assignment",
        re.compile(r"(?i)\b(?:password|passwd|pwd|token|secret|api[_-]?key)\s*[=:]\s*\S+"),
    ),
    ("credentials in a URI", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")),
]


def find_secret(text: str) -> str | None:
    """What the first secret-looking part of ``text`` is, or None."""
    for what, pattern in PATTERNS:
        if pattern.search(text):
            return what
    return None


def mask(text: str, keep: int = 4) -> str:
    """``text`` with all but its first ``keep`` characters hidden, for messages about it."""
    return text[:keep] + "…" if len(text) > keep else "…"
