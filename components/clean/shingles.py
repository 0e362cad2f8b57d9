"""The normalised form of a row that both duplicate detectors compare, its exact key (exact duplicates)
and its character shingles with their Jaccard similarity (near duplicates)."""

from __future__ import annotations

import hashlib
import zlib

SHINGLE_SIZE = 5  # characters per shingle: both detectors and the verifier use this n


def normalize(text: str) -> str:
    """Casefold, collapse whitespace, strip: the form both detectors compare."""
    return " ".join(text.casefold().split())


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (from bad JSON escapes) hashes instead of raising
    return text.encode("utf-8", "surrogatepass")


def exact_key(text: str) -> int:
    """64-bit deterministic digest (blake2b, digest_size=8, as unsigned int) of normalize(text)."""
    return int.from_bytes(hashlib.blake2b(_utf8(normalize(text)), digest_size=8).digest(), "big")


def shingles(text: str, n: int = SHINGLE_SIZE) -> set[int]:
    """Character n-grams of normalize(text), each crc32-hashed (32-bit, of its UTF-8 bytes); a text shorter
    than n gives one shingle of the whole text (the empty text included)."""
    s = normalize(text)
    if len(s) <= n:
        return {zlib.crc32(_utf8(s))}
    if s.isascii():  # one byte per character: slice the encoded text instead of encoding every n-gram
        b = s.encode("ascii")
        return {zlib.crc32(b[i : i + n]) for i in range(len(b) - n + 1)}
    return {zlib.crc32(_utf8(s[i : i + n])) for i in range(len(s) - n + 1)}


def jaccard(a: set[int] | frozenset[int], b: set[int] | frozenset[int]) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)
