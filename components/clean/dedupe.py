"""Exact and near-duplicate detection over the rows of a training dataset.

Two detectors compare the same normalised form of a row (``normalize``: casefold, collapse whitespace):

* exact duplicates: ``exact_key`` is a 64-bit blake2b digest of that form; rows with one key are copies.
* near duplicates: ``NearDupIndex`` streams rows in batches and keeps, per row, only one 64-bit hash per
  LSH band of its MinHash signature (over character 5-grams). ``candidate_pairs`` returns the row pairs
  that share a band; ``resolve_near_duplicates`` verifies them with the exact Jaccard similarity of the
  rows' shingle sets and maps every removed row to the earliest row of its cluster.

Everything is deterministic: no salted ``hash()``, no global RNG; hash functions are crc32, blake2b and
fixed-constant 64-bit mixing in numpy (unsigned arithmetic wraps mod 2**64 identically on every machine),
and every per-index constant is derived from ``seed`` through blake2b.

MinHash here is one-permutation hashing with optimal densification (Li, Owen & Zhang 2012; Shrivastava
2017): each shingle is hashed once, the top bits of its hash pick one of ``num_perm`` bins, and a row's
value in a bin is the least hash that fell there; empty bins borrow from a bin chosen by a fixed probe
sequence. Per bin, two rows agree with probability equal to their Jaccard similarity, as with
``num_perm`` independent permutations, but the cost is one hash per shingle instead of ``num_perm``:
the classic (a*x + b) mod p form measured 220 s per 1M rows of 150 characters here (1 thread), too slow
for the 60 s target; this measures ~7 s.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable

import numpy as np

SHINGLE_SIZE = 5  # characters per shingle: both detectors and the verifier use this n

# add() works in chunks so its temporaries stay bounded whatever the batch size: a few uint64 arrays per
# character plus 8 bytes x num_perm per row for the signatures (16 MB at 16384 rows x 128); measured
# ~70 MB peak per chunk of 2**20 characters, on top of the batch's normalised strings. A single row longer
# than the character budget still goes in one chunk.
_CHUNK_CHARS = 1 << 20
_CHUNK_ROWS = 16384

# A band hash shared by more rows than this is pathological (boilerplate rows, or many copies of one row):
# all pairs would be quadratic (1000 rows -> ~500k pairs), so such a bucket yields only the chain of
# consecutive members (i1, i2), (i2, i3), ... in index order. Union-find in resolve_near_duplicates still
# joins the members that verify, but a member that verifies only against a non-neighbour can be missed.
MAX_BUCKET = 1000

# Optimal densification: an empty bin tries this many probes of the fixed sequence, then falls back to the
# row's least hash overall (itself a valid min-hash). Only rows with very few shingles reach the fallback.
_MAX_PROBES = 64

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_EMPTY = _U64(_MASK64)  # an empty bin; a shingle hash equal to it is a 2**-64 event and reads as empty
_FNV_PRIME = _U64(0x100000001B3)
_MIX1 = _U64(0xFF51AFD7ED558CCD)  # murmur3 fmix64 constants
_MIX2 = _U64(0xC4CEB9FE1A85EC53)


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
    """Character n-grams of normalize(text), each crc32-hashed (32-bit); a text shorter than n gives one
    shingle of the whole text (the empty text included)."""
    s = normalize(text)
    if len(s) <= n:
        return {zlib.crc32(_utf8(s))}
    return {zlib.crc32(_utf8(s[i : i + n])) for i in range(len(s) - n + 1)}


def jaccard(a: set[int], b: set[int]) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _seeded(seed: int, label: str, count: int) -> np.ndarray:
    """``count`` uint64 constants from blake2b(seed, label): the same on every machine and numpy version."""
    digest = hashlib.blake2b(f"slmforge.dedupe:{seed}:{label}".encode(), digest_size=8).digest()
    base = int.from_bytes(digest, "big")
    return _fmix64(np.arange(count, dtype=_U64) ^ _U64(base))


def _fmix64(h: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser, in place on a uint64 array (wrapping arithmetic): every input bit
    reaches every output bit, so the top bits can pick a bin and the rest order within it."""
    h ^= h >> _U64(33)
    h *= _MIX1
    h ^= h >> _U64(33)
    h *= _MIX2
    h ^= h >> _U64(33)
    return h


def _detection_probability(jac: float, bands: int, rows: int) -> float:
    """LSH S-curve: P(two rows with Jaccard ``jac`` share at least one of ``bands`` bands of ``rows``)."""
    return 1.0 - (1.0 - jac**rows) ** bands


def choose_bands(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows per band), bands*rows <= num_perm: the most rows per band (fewest false candidates)
    whose detection probability at ``threshold`` is still >= ``recall``.

    threshold=0.9, num_perm=128 gives 12 bands x 10 rows (120 of the 128 values used): the S-curve's
    midpoint (1/12)**(1/10) = 0.78 sits below 0.9, a pair at Jaccard 0.9 is a candidate with probability
    0.994 (0.9986 at 0.917, a one-character edit of a 120-character row), at 0.7 with 0.29 and at 0.5
    with 0.012; the verifier drops the false candidates. 11 x 11 would catch only 0.984 at 0.9.
    """
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if _detection_probability(threshold, b, r) >= recall:
            return b, r
    return num_perm, 1


class NearDupIndex:
    """MinHash signatures with LSH banding; stores only band hashes (not texts, not full signatures).

    Memory: 8 bytes x bands per row (96 bytes at the default 12 bands: ~96 MB per million rows).
    """

    def __init__(self, threshold: float = 0.9, num_perm: int = 128, seed: int = 1):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold={threshold}: use a Jaccard similarity in (0, 1)")
        if num_perm < 1:
            raise ValueError(f"num_perm={num_perm}: use at least 1")
        self.threshold = threshold
        self.num_perm = num_perm
        self.seed = seed
        self.bands, self.rows = choose_bands(threshold, num_perm)
        # P(a pair at exactly `threshold` becomes a candidate): 0.994 for the defaults (see choose_bands)
        self.detection_at_threshold = _detection_probability(threshold, self.bands, self.rows)
        self._shingle_seed = _U64(int(_seeded(seed, "shingle", 1)[0]))
        self._band_seeds = _seeded(seed, "band", self.bands)
        # probe sequence of optimal densification: probe t of empty bin j reads bin _probes[t, j]; the same
        # sequence for every row, so two rows agree in a densified bin with probability = their Jaccard
        probe_hash = _seeded(seed, "probe", _MAX_PROBES * num_perm).reshape(_MAX_PROBES, num_perm)
        self._probes = (probe_hash % _U64(num_perm)).astype(np.intp)
        self._chunks: list[np.ndarray] = []  # (bands, rows in the add() call) uint64 each
        self.size = 0

    def add(self, texts: list[str]) -> None:
        """Append a batch; rows get consecutive indices 0, 1, 2, ... across calls."""
        if not texts:
            return
        normed = [normalize(t) for t in texts]
        lengths = np.fromiter((len(s) for s in normed), dtype=np.int64, count=len(normed))
        ends = np.cumsum(lengths)
        start = 0
        while start < len(normed):
            before = ends[start] - lengths[start]
            stop = int(np.searchsorted(ends, before + _CHUNK_CHARS, side="right"))
            stop = max(start + 1, min(stop, start + _CHUNK_ROWS, len(normed)))
            signature = self._signatures(normed[start:stop], lengths[start:stop])
            self._chunks.append(self._band_hashes(signature))
            start = stop
        self.size += len(normed)

    def _shingle_hashes(self, normed: list[str], lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(64-bit hash, row) for every character n-gram of every row: the same n-grams as ``shingles``,
        hashed with vectorised FNV-1a over code points + fmix64 instead of crc32 (one numpy pass per
        character of the window rather than a Python call per shingle)."""
        n = SHINGLE_SIZE
        code = np.frombuffer("".join(normed).encode("utf-32-le", "surrogatepass"), dtype="<u4")
        code = code.astype(_U64)
        row_of_char = np.repeat(np.arange(len(normed), dtype=np.int64), lengths)
        hashes, rows = [], []
        windows = len(code) - n + 1
        if windows > 0:
            h = np.full(windows, self._shingle_seed, dtype=_U64)
            for k in range(n):
                h ^= code[k : k + windows]
                h *= _FNV_PRIME
            inside = row_of_char[:windows] == row_of_char[n - 1 :]  # window does not cross a row boundary
            hashes.append(_fmix64(h[inside]))
            rows.append(row_of_char[:windows][inside])
        short = np.flatnonzero(lengths < n)  # rows shorter than n: one shingle of the whole row
        if short.size:
            first = np.cumsum(lengths)[short] - lengths[short]
            h = np.full(short.size, self._shingle_seed, dtype=_U64)
            last = max(len(code) - 1, 0)
            padded = code if len(code) else np.zeros(1, dtype=_U64)
            for k in range(n - 1):  # short rows have at most n-1 characters
                live = k < lengths[short]
                step = (h ^ padded[np.minimum(first + k, last)]) * _FNV_PRIME
                h = np.where(live, step, h)
            hashes.append(_fmix64(h))
            rows.append(short)
        return np.concatenate(hashes), np.concatenate(rows)

    def _signatures(self, normed: list[str], lengths: np.ndarray) -> np.ndarray:
        """(num_perm, rows) uint64 one-permutation MinHash signatures, densified."""
        p, count = self.num_perm, len(normed)
        h, row = self._shingle_hashes(normed, lengths)
        # the top 32 bits pick the bin (multiply-shift range reduction: bins are contiguous ranges of h),
        # so within a bin the least h is the least shingle; values of different bins never coincide
        bin_ = ((h >> _U64(32)) * _U64(p)) >> _U64(32)
        sig = np.full(p * count, _EMPTY, dtype=_U64)
        np.minimum.at(sig, bin_.astype(np.intp) * count + row, h)
        sig = sig.reshape(p, count)
        empty_bin, empty_row = np.nonzero(sig == _EMPTY)
        if empty_bin.size:
            fill = np.full(empty_bin.size, _EMPTY, dtype=_U64)
            pending = np.arange(empty_bin.size)
            for t in range(_MAX_PROBES):
                donor = sig[self._probes[t, empty_bin[pending]], empty_row[pending]]
                found = donor != _EMPTY
                fill[pending[found]] = donor[found]
                pending = pending[~found]
                if not pending.size:
                    break
            if pending.size:
                fill[pending] = sig.min(axis=0)[empty_row[pending]]
            sig[empty_bin, empty_row] = fill  # written after probing: donors are always original bins
        return sig

    def _band_hashes(self, sig: np.ndarray) -> np.ndarray:
        """(bands, rows) uint64: each band's `rows` signature values folded through fmix64."""
        out = np.empty((self.bands, sig.shape[1]), dtype=_U64)
        for k in range(self.bands):
            h = np.full(sig.shape[1], self._band_seeds[k], dtype=_U64)
            for value in sig[k * self.rows : (k + 1) * self.rows]:
                h ^= value
                _fmix64(h)
            out[k] = h
        return out

    def candidate_pairs(self) -> list[tuple[int, int]]:
        """Pairs (i, j), i < j, sharing at least one band; found by sorting each band's hashes (numpy), not
        by Python dicts of all rows. A bucket of more than MAX_BUCKET rows gives its chain of consecutive
        members only (see MAX_BUCKET). Sorted by (i, j)."""
        if self.size < 2:
            return []
        bands = np.concatenate(self._chunks, axis=1) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks = [bands]  # concatenated once; later add() calls append after it
        n = self.size
        codes = [np.empty(0, dtype=np.int64)]  # pair (i, j) encoded as i * n + j
        for band in bands:
            order = np.argsort(band, kind="stable")  # stable: members of a bucket in index order
            sorted_hash = band[order]
            new_bucket = np.empty(n, dtype=bool)
            new_bucket[0] = True
            np.not_equal(sorted_hash[1:], sorted_hash[:-1], out=new_bucket[1:])
            starts = np.flatnonzero(new_bucket)
            sizes = np.diff(np.append(starts, n))
            # big buckets: consecutive members only
            big = sizes > MAX_BUCKET
            for s, size in zip(starts[big].tolist(), sizes[big].tolist(), strict=True):
                members = order[s : s + size]
                codes.append(members[:-1] * n + members[1:])
            # small buckets: all pairs, by distance d within the bucket (positions with a partner d ahead)
            small = (sizes >= 2) & (sizes <= MAX_BUCKET)
            first, count = starts[small], sizes[small]
            end = np.repeat(first + count, count)
            # sorted positions of all members of small buckets: each bucket's start + 0, 1, ..., size - 1
            pos = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
            d = 1
            while pos.size:
                keep = pos + d < end
                pos, end = pos[keep], end[keep]
                codes.append(order[pos] * n + order[pos + d])
                d += 1
        pairs = np.unique(np.concatenate(codes))
        return list(zip((pairs // n).tolist(), (pairs % n).tolist(), strict=True))


def _sorted_shingles(text: str) -> np.ndarray:
    return np.array(sorted(shingles(text)), dtype=np.uint32)


def _sorted_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """jaccard() of two sorted, duplicate-free uint32 arrays (a compact form of shingle sets)."""
    at = np.searchsorted(b, a)
    inter = int(np.count_nonzero(b[np.minimum(at, len(b) - 1)] == a))
    return inter / (len(a) + len(b) - inter)


def resolve_near_duplicates(
    pairs: Iterable[tuple[int, int]], get_text: Callable[[int], str], threshold: float
) -> dict[int, int]:
    """Verify candidate pairs with the exact Jaccard of their shingle sets (get_text(i) -> str, called once
    per distinct index, in increasing index order, so the caller can fetch texts from disk); return
    {removed_index: kept_index} where the kept row is always the earliest (lowest index) of its cluster and
    no kept row is removed.

    A cluster is a connected component of the verified pairs (union-find, the root always the lower
    index), so a chain a~b~c clusters a, b and c even when a and c alone would fall under the threshold.
    Memory: the shingle sets of the distinct indices, as sorted uint32 arrays (~4 bytes per character).
    """
    edges = sorted({(int(min(i, j)), int(max(i, j))) for i, j in pairs if i != j})
    if not edges:
        return {}
    indices = sorted({i for edge in edges for i in edge})
    sets = {i: _sorted_shingles(get_text(i)) for i in indices}
    parent = {i: i for i in indices}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    for i, j in edges:
        if _sorted_jaccard(sets[i], sets[j]) >= threshold:
            ri, rj = root(i), root(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)  # the lower index is the root: the kept row
    removed = {i: root(i) for i in indices}
    return {i: r for i, r in removed.items() if r != i}
