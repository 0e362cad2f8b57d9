"""Exact and near-duplicate detection over the rows of a training dataset.

Two detectors compare the same normalised form of a row (``normalize``: casefold, collapse whitespace):

* exact duplicates: ``exact_key`` is a 64-bit blake2b digest of that form; rows with one key are copies.
* near duplicates, in three steps:

  1. ``NearDupIndex.add`` streams rows in batches and keeps, per row, one 32-bit hash per LSH band of its
     MinHash signature (over character 5-grams) and a 128-byte *sketch*: the low 8 bits of each of the 128
     MinHash values. 176 bytes a row, not the texts.
  2. ``NearDupIndex.candidate_pairs`` finds the row pairs that share a band and, band by band and block by
     block, estimates their Jaccard similarity from the sketches; only pairs whose estimate reaches
     threshold - MARGIN survive, as numpy arrays ``(i, j, est)``. Memory follows the survivors, never all
     the pairs that share a band.
  3. ``resolve_near_duplicates`` accepts the pairs whose estimate reaches threshold + MARGIN, checks the
     others with the exact Jaccard of the rows' shingle sets (the texts fetched in one call), and maps every
     removed row to the earliest row of its cluster (``NearDupResult``).

The normalised form, the exact key and the shingles are in shingles.py; steps 1 and 2, the MinHash/LSH
index, in minhash.py. This module is step 3: the exact check of the uncertain pairs and their
clustering into removed rows.

The exact check is vectorised (shingle_sets, exact_jaccards) rather than per-pair Python frozensets: those
measured 27 s and ~2 GB for the 1.55M checks on 1M template rows (minhash.py: "Why the sketch"; 8 KB per
set, 283k sets alive at once, the intersections cache-bound), this 9 s and 4 bytes per shingle.

Everything is deterministic: no salted ``hash()``, no global RNG; hash functions are crc32, blake2b and
fixed-constant 64-bit mixing in numpy (unsigned arithmetic wraps mod 2**64 identically on every machine),
and every per-index constant is derived from ``seed`` through blake2b.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from components.clean.minhash import _CHUNK_CHARS, _U64, MARGIN, _mapped
from components.clean.shingles import SHINGLE_SIZE, _utf8, normalize


def _crc32_table() -> np.ndarray:
    """The byte table of CRC-32 (reflected polynomial 0xEDB88320), as zlib.crc32 uses."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> np.uint32(1)) ^ np.uint32(0xEDB88320), table >> np.uint32(1))
    return table.astype(np.uint32)


_CRC_TABLE = _crc32_table()
_CRC_INIT = np.uint32(0xFFFFFFFF)


def shingle_sets(texts: list[str], n: int = SHINGLE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The shingle sets of many texts at once, as (offsets, values): values[offsets[k]:offsets[k + 1]] is
    sorted(shingles(texts[k], n)) as uint32. The same crc32 of the same UTF-8 n-grams, computed with the
    table-driven CRC-32 in numpy over all n-grams together (one pass per byte of the longest n-gram)
    instead of a zlib call per n-gram: ~0.1 us per shingle, sorting included, against ~0.3 us for
    shingles() alone, and 4 bytes per shingle instead of ~60 in a Python set. Works in chunks of ~2**20
    characters."""
    # normalised chunk by chunk: a second copy of every text would be the largest allocation here
    lengths = np.fromiter((len(normalize(t)) for t in texts), dtype=np.int64, count=len(texts))
    ends = np.cumsum(lengths)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    # at most one shingle per n-gram (one for a row of at most n characters): written in place, so the
    # peak is the result plus one chunk (the pages of the unused tail are never touched)
    values = _mapped((int(np.maximum(lengths - n + 1, 1).sum()),), np.uint32)
    start = 0
    while start < len(texts):
        before = int(ends[start] - lengths[start])
        stop = max(
            start + 1, min(int(np.searchsorted(ends, before + _CHUNK_CHARS, side="right")), len(texts))
        )
        normed = [normalize(t) for t in texts[start:stop]]
        counts, vals = _shingle_chunk(normed, lengths[start:stop], n)
        offsets[start + 1 : stop + 1] = offsets[start] + np.cumsum(counts)
        values[offsets[start] : offsets[stop]] = vals
        start = stop
    return offsets, values[: offsets[-1]]


def _shingle_chunk(normed: list[str], lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(shingles per row, their sorted crc32 values row after row) for already normalised texts."""
    data = np.frombuffer(_utf8("".join(normed)), dtype=np.uint8)
    # character k starts at byte first[k] (UTF-8: every byte but a continuation byte 10xxxxxx starts one)
    first = np.flatnonzero((data & 0xC0) != 0x80)
    first = np.append(first, len(data))
    row_of_char = np.repeat(np.arange(len(normed), dtype=np.int64), lengths)
    windows = len(row_of_char) - n + 1
    keys = [np.zeros(0, dtype=_U64)]
    if windows > 0:
        inside = row_of_char[:windows] == row_of_char[n - 1 :]  # n-gram within one row
        crc = np.full(windows, _CRC_INIT, dtype=np.uint32)
        if len(data) == len(row_of_char):  # one byte per character: byte t of every n-gram is a slice
            for t in range(n):
                crc = _CRC_TABLE[(crc ^ data[t : t + windows]) & 0xFF] ^ (crc >> np.uint32(8))
            crc = crc[inside]
        else:  # n-grams of n to 4n bytes: the first n bytes for all, the rest only for the longer ones
            starts = first[:windows][inside]
            size = (first[n : windows + n] - first[:windows])[inside]
            crc = crc[inside]
            for t in range(n):
                crc = _CRC_TABLE[(crc ^ data[starts + t]) & 0xFF] ^ (crc >> np.uint32(8))
            longer = np.flatnonzero(size > n)
            if longer.size:
                part, starts, size = crc[longer], starts[longer], size[longer]
                for t in range(n, int(size.max())):
                    step = _CRC_TABLE[(part ^ data[np.minimum(starts + t, len(data) - 1)]) & 0xFF]
                    part = np.where(t < size, step ^ (part >> np.uint32(8)), part)
                crc[longer] = part
        crc ^= _CRC_INIT
        keys.append((row_of_char[:windows][inside].astype(_U64) << _U64(32)) | crc.astype(_U64))
    short = np.flatnonzero(lengths <= n)  # rows of at most n characters: one shingle of the whole row
    if short.size:
        whole = np.fromiter(
            (zlib.crc32(_utf8(normed[k])) for k in short.tolist()), dtype=_U64, count=short.size
        )
        keys.append((short.astype(_U64) << _U64(32)) | whole)
    key = np.concatenate(keys)
    key.sort(kind="stable")  # by (row, crc); rows come in order, which the stable sort exploits (2.5x)
    key = key[np.append(True, key[1:] != key[:-1])]
    counts = np.bincount((key >> _U64(32)).astype(np.int64), minlength=len(normed))
    return counts, (key & _U64(0xFFFFFFFF)).astype(np.uint32)


# exact_jaccards() works on blocks of this many pairs: ~2 x 150 shingles a pair, each with an 8-byte key,
# an 8-byte index and an 8-byte pair prefix: ~30 MB of temporaries at 4096 pairs of 150-character rows
_VERIFY_PAIRS = 4096


def exact_jaccards(offsets: np.ndarray, values: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """jaccard() of the shingle sets a[k] and b[k] of a shingle_sets() table, float64 (the same division
    as jaccard, so the same value), for many pairs at once: per block of pairs, the two sorted sets of
    every pair are laid out one after the other under a pair prefix, a stable sort merges each pair's
    two sorted runs in linear time, and equal neighbours are the intersection."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    out = np.empty(len(a), dtype=np.float64)
    lens = np.diff(offsets)
    for s in range(0, len(a), _VERIFY_PAIRS):
        pa, pb = a[s : s + _VERIFY_PAIRS], b[s : s + _VERIFY_PAIRS]
        la, lb = lens[pa], lens[pb]
        seg_from = np.empty(2 * len(pa), dtype=np.int64)  # runs: set of a, set of b, for each pair in turn
        seg_from[0::2], seg_from[1::2] = offsets[pa], offsets[pb]
        seg_len = np.empty(2 * len(pa), dtype=np.int64)
        seg_len[0::2], seg_len[1::2] = la, lb
        total = int(seg_len.sum())
        at = np.repeat(seg_from - (np.cumsum(seg_len) - seg_len), seg_len) + np.arange(total)
        pair = np.repeat(np.arange(len(pa), dtype=_U64) << _U64(32), la + lb)
        key = values[at].astype(_U64) | pair
        del at, pair
        key.sort(kind="stable")  # merges the sorted runs
        dup = key[1:] == key[:-1]
        inter = np.bincount((key[1:][dup] >> _U64(32)).astype(np.int64), minlength=len(pa))
        union = la + lb - inter
        out[s : s + len(pa)] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return out


@dataclass(frozen=True)
class NearDupResult:
    """What resolve_near_duplicates decided, with counts for reporting.

    removed: {removed row: kept row}; the kept row is the earliest (lowest index) of its cluster and is
        never itself removed.
    candidates: distinct pairs given (i != j; (i, j) and (j, i) are one pair).
    accepted_on_estimate: pairs with est >= threshold + MARGIN, joined without their texts.
    verified: pairs whose exact Jaccard was computed. The other uncertain pairs had both rows in one
        cluster already: candidates - accepted_on_estimate - verified of them, skipped.
    verified_accepted: verified pairs whose exact Jaccard reached the threshold.
    """

    removed: dict[int, int]
    candidates: int
    accepted_on_estimate: int
    verified: int
    verified_accepted: int


def resolve_near_duplicates(
    i: np.ndarray,
    j: np.ndarray,
    est: np.ndarray,
    get_texts: Callable[[list[int]], dict[int, str]],
    threshold: float,
) -> NearDupResult:
    """Cluster the pairs (i[k], j[k]) whose Jaccard similarity reaches ``threshold``; every row of a cluster
    but its earliest is removed in favour of that earliest row (``NearDupResult.removed``).

    A pair with est >= threshold + MARGIN is accepted on its estimate; any other pair is checked with the
    exact Jaccard of the rows' shingle sets (that of ``jaccard(shingles(x), shingles(y))``), unless its
    rows are already in one cluster. ``get_texts(indices)`` receives the sorted list of all distinct rows
    that need checking, in ONE call (so the caller can read them from disk in one pass), and returns
    {index: text} (raw or normalised: the texts are normalised here); it is not called when no pair needs
    checking. The pairs' order, their orientation (i < j or not), repeats and i == j do not matter.

    A cluster is a connected component of the accepted pairs (union-find, the root always the lower
    index), so a chain a~b~c clusters a, b and c even when a and c alone would fall under the threshold.
    Checking runs in blocks of pairs in (i, j) order with numpy (exact_jaccards), ~3 us a pair; before
    each block, pairs already inside one cluster are dropped. Memory: the texts from get_texts while their
    shingle sets are built, then 4 bytes per shingle of the rows to check (~0.6 KB per 150 characters).
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    est = np.asarray(est, dtype=np.float32)
    if not len(i) == len(j) == len(est):
        raise ValueError(f"i, j and est differ in length: {len(i)}, {len(j)}, {len(est)}")
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    distinct = lo != hi
    lo, hi, est = lo[distinct], hi[distinct], est[distinct]
    order = np.lexsort((-est, hi, lo))  # by (lo, hi); of repeats, the highest estimate first
    lo, hi, est = lo[order], hi[order], est[order]
    first = np.ones(len(lo), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    lo, hi, est = lo[first], hi[first], est[first]

    parent: dict[int, int] = {}  # union-find over the rows with pairs: exactly the non-root rows have entries

    def root(x: int) -> int:
        while True:
            p = parent.get(x, x)
            if p == x:
                return x
            grand = parent.get(p, p)
            parent[x] = grand  # path halving
            x = grand

    def union(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the lower index is the root: the kept row

    def apart(a: np.ndarray, b: np.ndarray, joined_a: np.ndarray, joined_b: np.ndarray) -> np.ndarray:
        """Which pairs join two different clusters; only pairs of two already joined rows can fail, so
        only those walk the union-find."""
        out = np.ones(len(a), dtype=bool)
        both = np.flatnonzero(joined_a & joined_b)
        out[both] = [root(x) != root(y) for x, y in zip(a[both].tolist(), b[both].tolist(), strict=True)]
        return out

    sure = est >= np.float32(threshold + MARGIN)
    for a, b in zip(lo[sure].tolist(), hi[sure].tolist(), strict=True):
        union(a, b)
    joined = np.unique(np.concatenate([lo[sure], hi[sure]]))  # rows in a cluster of two or more
    lo, hi = lo[~sure], hi[~sure]
    keep = apart(lo, hi, np.isin(lo, joined), np.isin(hi, joined))  # drop pairs already joined
    lo, hi = lo[keep], hi[keep]
    verified = verified_accepted = 0
    if len(lo):
        rows = np.unique(np.concatenate([lo, hi]))
        texts = get_texts(rows.tolist())
        offsets, values = shingle_sets([texts[x] for x in rows.tolist()])
        del texts
        a_at, b_at = np.searchsorted(rows, lo), np.searchsorted(rows, hi)
        in_cluster = np.isin(rows, joined)  # per row to check: joined to another row yet?
        for s in range(0, len(lo), _VERIFY_PAIRS):
            a, b = a_at[s : s + _VERIFY_PAIRS], b_at[s : s + _VERIFY_PAIRS]
            keep = apart(rows[a], rows[b], in_cluster[a], in_cluster[b])
            a, b = a[keep], b[keep]
            sims = exact_jaccards(offsets, values, a, b)
            verified += len(sims)
            accepted = sims >= threshold
            verified_accepted += int(accepted.sum())
            for x, y in zip(rows[a[accepted]].tolist(), rows[b[accepted]].tolist(), strict=True):
                union(x, y)
            in_cluster[a[accepted]] = in_cluster[b[accepted]] = True
    removed = {x: root(x) for x in sorted(parent)}
    return NearDupResult(
        removed={x: r for x, r in removed.items() if r != x},
        candidates=int(first.sum()),
        accepted_on_estimate=int(sure.sum()),
        verified=verified,
        verified_accepted=verified_accepted,
    )
