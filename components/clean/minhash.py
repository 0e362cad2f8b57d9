"""The MinHash/LSH index of near-duplicate detection, steps 1 and 2 of dedupe.py: ``NearDupIndex``
keeps per row one hash per LSH band and a sketch of its MinHash signature, and ``candidate_pairs``
gives the row pairs that share a band and whose sketch estimate of the Jaccard similarity reaches
threshold - MARGIN.

Why the sketch: template-generated data (one sentence pattern, different slot values) has millions of
sibling pairs at Jaccard 0.6-0.85, and a 12x10 LSH at threshold 0.9 makes a pair at 0.8 a candidate with
probability 0.74. Verifying every candidate exactly took 226 s for 15.5 million candidates among 200k such
rows and would take hours at 1M; comparing two sketches costs ~70 ns in numpy, so nearly every candidate is
settled without its texts. Measured on 1M template rows (1 thread): 153M band pairs compared -> 1.56M
within the margin -> 7k accepted on the estimate and 1.55M checked exactly; add 8 s, candidate_pairs 12 s,
resolve 9 s (texts in memory), ~280 MB RSS for the index and candidate_pairs. The removed map is identical
to checking every candidate exactly on 200k such rows; on 1M it misses 3 of 17762 rows (pairs at Jaccard
0.90-0.915 estimated at 0.81-0.83) and adds none.

MinHash here is one-permutation hashing with optimal densification (Li, Owen & Zhang 2012; Shrivastava
2017): each shingle is hashed once, the top bits of its hash pick one of ``num_perm`` bins, and a row's
value in a bin is the least hash that fell there; empty bins borrow from a bin chosen by a fixed probe
sequence. Per bin, two rows agree with probability equal to their Jaccard similarity, as with
``num_perm`` independent permutations, but the cost is one hash per shingle instead of ``num_perm``:
the classic (a*x + b) mod p form measured 220 s per 1M rows of 150 characters here (1 thread), too slow
for the 60 s target; this measures ~7 s.

Jaccard estimate from the sketches. Two rows agree in a bin's full 64-bit value with probability J (their
Jaccard similarity); when they do not, the low 8 bits of two different values still coincide with
probability 1/256 (bits of an fmix64 output, independent of the top bits that chose the bin). So the
fraction ``agree`` of equal sketch bytes over m bins has expectation J + (1 - J)/256, and

    est = (agree - 1/256) / (1 - 1/256)            (estimate_from_agreement)

is unbiased for J, with standard deviation ~sqrt(J(1-J)/m) (binomial; 0.027 at J = 0.9, m = 128).
``NearDupIndex.estimate`` uses all 128 bins. ``candidate_pairs`` leaves out the 10 bins of the band that
made the pair a candidate: they agree by construction, and counting them biased the estimate of candidates
up by 10(1 - J)/128 (+0.016 at J = 0.8, measured: +0.0145), letting many more siblings into the exact
check; so candidates are estimated over m = 118 bins.
"""

from __future__ import annotations

import hashlib
import mmap

import numpy as np

from components.clean.shingles import SHINGLE_SIZE, normalize

# Estimates below threshold - MARGIN are dropped by candidate_pairs, estimates at or above
# threshold + MARGIN are accepted without their texts, the rest is checked with the exact Jaccard.
# A candidate's agreeing bytes over its m = 118 bins are ~Binomial(118, J + (1-J)/256) (the spread of
# est - J measured on the 200k template rows is at most the binomial one), so at threshold 0.9:
#   recall: P(est >= 0.82) = P(>= 97 of 118 agree) = 0.997 at J = 0.9 (0.9998 at 0.92, 0.977 at 0.88), on
#     top of the LSH's 0.994 chance of a shared band. Measured, LSH and estimate together, for pairs at
#     J in [0.90, 0.92): 0.987 for 60-character rows, 0.990 at 100, 0.995 at 150-200, 0.997 at 500 (short
#     rows fill fewer bins and lean more on densification).
#   false acceptance: P(est >= 0.98) = P(>= 116 of 118 agree) is 4e-4 at J = 0.9 itself, 4e-5 at 0.88,
#     1e-6 at 0.85: a pair accepted on its estimate is, all but surely, at J >= 0.88.
# A wider margin buys little recall for many more exact checks: at 1M template rows the survivors are
# 1.56M at 0.08, mostly siblings at J ~0.8 (P(est >= 0.82) = 0.33 at J = 0.8).
MARGIN = 0.08

# add() works in chunks so its temporaries stay bounded whatever the batch size: a few uint64 arrays per
# character plus 8 bytes x num_perm per row for the signatures (16 MB at 16384 rows x 128); measured
# ~70 MB peak per chunk of 2**20 characters, on top of the batch's normalised strings. A single row longer
# than the character budget still goes in one chunk.
_CHUNK_CHARS = 1 << 20
_CHUNK_ROWS = 16384

# add() stores the rows' sketches and band hashes in slabs of this many rows (8 MB + 3 MB at the defaults),
# each its own memory map (_mapped): the last slab's unwritten rows take no memory, and merging the slabs
# into one array (_tables) hands each slab back to the OS as soon as it is copied.
_SLAB_ROWS = 1 << 16

# candidate_pairs() estimates pairs in blocks of whole buckets of at most this many rows: the block's
# sketches are gathered once (num_perm bytes a row, 8 MB at 2**16 x 128) and each pass over it compares at
# most this many pairs (two more such gathers), so its temporaries stay ~30 MB whatever the band yields.
_BLOCK_ROWS = 1 << 16

# A band hash shared by more rows than this is pathological (boilerplate rows, or many copies of one row):
# all pairs would be quadratic (1000 rows -> ~500k pairs), so such a bucket yields only the chain of
# consecutive members (i1, i2), (i2, i3), ... in index order. Union-find in resolve_near_duplicates still
# joins the members that verify, but a member that verifies only against a non-neighbour can be missed.
MAX_BUCKET = 1000

# Optimal densification: an empty bin tries this many probes of the fixed sequence, then falls back to the
# row's least hash overall (itself a valid min-hash). Only rows with very few shingles reach the fallback.
_MAX_PROBES = 64

_SKETCH_VALUES = 256  # the sketch keeps the low 8 bits of each MinHash value
_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_EMPTY = _U64(_MASK64)  # an empty bin; a shingle hash equal to it is a 2**-64 event and reads as empty
_FNV_PRIME = _U64(0x100000001B3)
_MIX1 = _U64(0xFF51AFD7ED558CCD)  # murmur3 fmix64 constants
_MIX2 = _U64(0xC4CEB9FE1A85EC53)
_BYTE_SUM = _U64(0x0101010101010101)


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
    with 0.012; the sketch estimate drops the false candidates. 11 x 11 would catch only 0.984 at 0.9.
    """
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if _detection_probability(threshold, b, r) >= recall:
            return b, r
    return num_perm, 1


def estimate_from_agreement(agree: np.ndarray, num_perm: int) -> np.ndarray:
    """Jaccard estimates (float32) from counts of equal sketch bytes out of ``num_perm``, corrected for the
    1/256 chance that two different MinHash values share their low 8 bits (see the module docstring)."""
    chance = 1.0 / _SKETCH_VALUES
    frac = np.asarray(agree, dtype=np.float64) / num_perm
    return ((frac - chance) / (1.0 - chance)).astype(np.float32)


def _mapped(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array in its own anonymous memory map: a page is taken when first written, and all
    go back to the OS as soon as the array is freed. Freed heap blocks (anything up to glibc's 32 MB mmap
    threshold) stay with the process instead: with the index kept in per-batch chunks and concatenated,
    RSS stayed ~150 MB above the live data at 1M rows."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes == 0:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).reshape(shape)


class NearDupIndex:
    """MinHash signatures with LSH banding. Per row it keeps one 32-bit hash per band and a sketch of
    ``num_perm`` bytes (the low 8 bits of each MinHash value); not the texts, not the full signatures.

    Memory: 4 bytes x bands + num_perm bytes per row, 48 + 128 = 176 bytes at the defaults (168 MiB per
    million rows), in memory-mapped slabs (see _SLAB_ROWS). candidate_pairs() adds ~85 MiB of temporaries
    at 1M rows (one band's sort order and buckets, one block of sketches, the survivors at 8 bytes each,
    then the (i, j, est) arrays): measured RSS +190 MB after add(), peak +284 MB through candidate_pairs.
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
        # candidate_pairs estimates a pair from the bins outside the band that made it a candidate (all of
        # them when a band takes every bin): 118 of 128 at the defaults; the fewest agreeing bytes among
        # those whose estimate reaches threshold - MARGIN is 97 at 0.9
        self._excluded = self.rows if num_perm > self.rows else 0
        self.estimate_bins = num_perm - self._excluded
        table = estimate_from_agreement(np.arange(self.estimate_bins + 1), self.estimate_bins)
        reached = np.flatnonzero(table >= np.float32(threshold - MARGIN))
        self.min_agreement = int(reached[0]) if reached.size else self.estimate_bins + 1
        self._shingle_seed = _U64(int(_seeded(seed, "shingle", 1)[0]))
        self._band_seeds = _seeded(seed, "band", self.bands)
        # probe sequence of optimal densification: probe t of empty bin j reads bin _probes[t, j]; the same
        # sequence for every row, so two rows agree in a densified bin with probability = their Jaccard
        probe_hash = _seeded(seed, "probe", _MAX_PROBES * num_perm).reshape(_MAX_PROBES, num_perm)
        self._probes = (probe_hash % _U64(num_perm)).astype(np.intp)
        # rows are appended into slabs (see _SLAB_ROWS), merged into one of each kind by _tables()
        self._sketch_slabs: list[np.ndarray] = []  # (slab rows, num_perm) uint8
        self._band_slabs: list[np.ndarray] = []  # (bands, slab rows) uint32
        self._filled = 0  # rows written into the last slab
        self.size = 0
        # filled by candidate_pairs(), for reporting: pairs sharing a band whose sketches were compared,
        # counted once per band they share (so a pair may count several times)
        self.band_pairs = 0

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
            # the sketch: low 8 bits of each value, one row per line so that a row's sketch is contiguous
            self._append(signature.astype(np.uint8).T, self._band_hashes(signature))
            start = stop

    def _append(self, sketch: np.ndarray, bands: np.ndarray) -> None:
        """Store rows after the last ones: sketch (rows, num_perm) uint8, bands (bands, rows) uint32."""
        done = 0
        while done < len(sketch):
            if not self._sketch_slabs or self._filled == len(self._sketch_slabs[-1]):
                self._sketch_slabs.append(_mapped((_SLAB_ROWS, self.num_perm), np.uint8))
                self._band_slabs.append(_mapped((self.bands, _SLAB_ROWS), np.uint32))
                self._filled = 0
            take = min(len(sketch) - done, len(self._sketch_slabs[-1]) - self._filled)
            self._sketch_slabs[-1][self._filled : self._filled + take] = sketch[done : done + take]
            self._band_slabs[-1][:, self._filled : self._filled + take] = bands[:, done : done + take]
            self._filled += take
            self.size += take
            done += take

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
        """(bands, rows) uint32: each band's `rows` signature values folded through fmix64, top 32 bits.

        32 bits suffice: two unrelated rows share a band hash by chance with probability 2**-32 (~120
        pairs a band among 1M rows), and such a pair only costs one sketch comparison, which rejects it
        (its estimate is ~0); 64 bits would add 48 MB per million rows for nothing."""
        out = np.empty((self.bands, sig.shape[1]), dtype=np.uint32)
        for k in range(self.bands):
            h = np.full(sig.shape[1], self._band_seeds[k], dtype=_U64)
            for value in sig[k * self.rows : (k + 1) * self.rows]:
                h ^= value
                _fmix64(h)
            out[k] = h >> _U64(32)
        return out

    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(sketches, band hashes) of all rows: (size, num_perm) uint8 and (bands, size) uint32. Several
        slabs are first copied into one array of each kind, slab by slab, each freed once copied (the peak
        is the data plus one slab); the result is then the only slab, full, so a later add() starts a
        new one."""
        if len(self._sketch_slabs) > 1:
            sketches = _mapped((self.size, self.num_perm), np.uint8)
            bands = _mapped((self.bands, self.size), np.uint32)
            start = 0
            while self._sketch_slabs:
                sketch, band = self._sketch_slabs.pop(0), self._band_slabs.pop(0)
                rows = len(sketch) if self._sketch_slabs else self._filled
                sketches[start : start + rows] = sketch[:rows]
                bands[:, start : start + rows] = band[:, :rows]
                start += rows
                del sketch, band
            self._sketch_slabs, self._band_slabs, self._filled = [sketches], [bands], self.size
        if not self._sketch_slabs:
            return np.zeros((0, self.num_perm), np.uint8), np.zeros((self.bands, 0), np.uint32)
        return self._sketch_slabs[0][: self.size], self._band_slabs[0][:, : self.size]

    def estimate(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """float32 Jaccard estimates of the row pairs (i[k], j[k]) from their sketches, over all num_perm
        bins (candidate_pairs leaves out those of the band that found a pair)."""
        sketches = self._tables()[0]
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        agree = np.empty(len(i), dtype=np.int64)
        for s in range(0, len(i), _BLOCK_ROWS):
            agree[s : s + _BLOCK_ROWS] = _agreement(sketches, i[s : s + _BLOCK_ROWS], j[s : s + _BLOCK_ROWS])
        return estimate_from_agreement(agree, self.num_perm)

    def candidate_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs sharing at least one band whose sketch estimate reaches threshold - MARGIN, as arrays
        ``(i, j, est)`` (int64, int64, float32): i < j, each pair once, sorted by (i, j); est is estimated
        over the bins outside the band that found the pair (see the module docstring), the same value
        whichever band it is.

        Band by band, the band's hashes are sorted (numpy, not Python dicts) and the pairs of each bucket
        are estimated and filtered block by block (see _BLOCK_ROWS): memory is bounded by the surviving
        pairs, never by all the pairs that share a band. A bucket of more than MAX_BUCKET rows gives its
        chain of consecutive members only (see MAX_BUCKET)."""
        self.band_pairs = 0
        empty = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))
        if self.size < 2:
            return empty
        sketches, bands = self._tables()
        n = self.size
        codes: list[np.ndarray] = []  # surviving pair (i, j) encoded as i * n + j
        buffers = (
            np.empty((_BLOCK_ROWS, self.num_perm), np.uint8),
            np.empty((_BLOCK_ROWS, self.num_perm), np.uint8),
        )
        for band in bands:
            for block, rows, a, b in self._band_pair_blocks(band, sketches):
                self.band_pairs += len(a)
                # agreement outside this band: its `rows` bins agree by construction (the pair shares its
                # hash), and counting them would bias the estimate up by rows * (1 - J) / num_perm
                agree = _agreement(block, a, b, buffers) - self._excluded
                keep = agree >= self.min_agreement
                if keep.any():
                    codes.append(rows[a[keep]] * n + rows[b[keep]])
        if not codes:
            return empty
        code = np.concatenate(codes)
        del codes
        code.sort()
        code = code[np.append(True, code[1:] != code[:-1])]  # a pair found in several bands: once
        i, j = code // n, code % n
        del code
        # the agreement outside a band is the same for every band that really holds the pair (all its bins
        # agree), so it is recounted once per pair rather than carried through the bands; a pair that met a
        # band only by a chance 32-bit collision of band hashes is dropped here if it falls short
        agree = np.empty(len(i), dtype=np.int64)
        for s in range(0, len(i), _BLOCK_ROWS):
            stop = s + _BLOCK_ROWS
            agree[s:stop] = _agreement(sketches, i[s:stop], j[s:stop], buffers) - self._excluded
        keep = agree >= self.min_agreement
        if not keep.all():
            i, j, agree = i[keep], j[keep], agree[keep]
        return i, j, estimate_from_agreement(agree, self.estimate_bins)

    def _band_pair_blocks(self, band: np.ndarray, sketches: np.ndarray):
        """Yield (block, rows, a, b): the row pairs (rows[a[k]], rows[b[k]]) sharing this band's hash,
        rows[a[k]] < rows[b[k]], at most _BLOCK_ROWS pairs at a time, with block = sketches[rows] (gathered
        once per block, so the comparisons read a few MB in near-sequential order instead of the whole
        sketch array at random). All pairs of buckets up to MAX_BUCKET rows, the chain of bigger ones."""
        n = len(band)
        order = np.argsort(band, kind="stable")  # stable: members of a bucket in index order
        sorted_hash = band[order]
        new_bucket = np.empty(n, dtype=bool)
        new_bucket[0] = True
        np.not_equal(sorted_hash[1:], sorted_hash[:-1], out=new_bucket[1:])
        del sorted_hash
        starts = np.flatnonzero(new_bucket)
        del new_bucket
        sizes = np.diff(np.append(starts, n))
        big = sizes > MAX_BUCKET
        for s, size in zip(starts[big].tolist(), sizes[big].tolist(), strict=True):
            for c in range(s, s + size - 1, _BLOCK_ROWS):  # big bucket: consecutive members only
                rows = order[c : min(c + _BLOCK_ROWS, s + size - 1) + 1]
                a = np.arange(len(rows) - 1)
                yield sketches[rows], rows, a, a + 1
        # small buckets, ordered by size so that a block holds buckets of similar size: all pairs, by
        # distance d within the bucket (members with a partner d places ahead)
        small = (sizes >= 2) & (sizes <= MAX_BUCKET)
        count = sizes[small]
        by_size = np.argsort(count, kind="stable")
        first, count = starts[small][by_size], count[by_size]
        del starts, sizes, small, big, by_size
        ends = np.cumsum(count)
        b0 = 0
        while b0 < len(count):
            base = int(ends[b0] - count[b0])
            b1 = max(b0 + 1, int(np.searchsorted(ends, base + _BLOCK_ROWS, side="right")))
            cnt = count[b0:b1]
            local_end = ends[b0:b1] - base
            # sorted positions of the block's members: each bucket's start + 0, 1, ..., size - 1
            at = np.repeat(first[b0:b1] - (local_end - cnt), cnt) + np.arange(int(local_end[-1]))
            rows = order[at]  # row indices, ascending within each bucket
            block = sketches[rows]
            end = np.repeat(local_end, cnt)
            pos = np.arange(len(rows))
            d = 1
            while True:
                live = pos + d < end
                pos, end = pos[live], end[live]
                if not pos.size:
                    break
                yield block, rows, pos, pos + d
                d += 1
            b0 = b1


def _agreement(
    sketches: np.ndarray, i: np.ndarray, j: np.ndarray, buffers: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Per pair, the number of equal bytes of sketches[i[k]] and sketches[j[k]] (int64). ``buffers``: two
    reusable (at least len(i), width) uint8 arrays for the gathered rows (fresh arrays cost page faults:
    ~2x the time of the comparison itself)."""
    width = sketches.shape[1]
    if buffers is None:
        a, b = sketches[i], sketches[j]
    else:
        a = np.take(sketches, i, axis=0, out=buffers[0][: len(i)])
        b = np.take(sketches, j, axis=0, out=buffers[1][: len(j)])
    eq = np.equal(a, b, out=a.view(bool))
    if width % 8 or width >= 256:
        return np.count_nonzero(eq, axis=1).astype(np.int64)
    # each uint64 word holds 8 byte flags (0/1): summing the words adds byte-wise without carries (at most
    # width/8 < 32 per byte), and the multiply-shift then adds the 8 byte lanes (at most width < 256)
    words = eq.view(_U64).sum(axis=1, dtype=_U64)
    return ((words * _BYTE_SUM) >> _U64(56)).astype(np.int64)
