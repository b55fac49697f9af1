"""Exact and near-duplicate detection with flat memory.

As rows stream past, each row's 64-bit text key, its MinHash signature (over
word shingles) and one key per LSH band are appended to files. Afterwards,
duplicates are found by sorting those keys one array at a time (8 bytes a
row), not by holding hash tables of millions of entries. A near-duplicate
candidate pair counts only when its estimated Jaccard similarity reaches the
threshold. The first occurrence always stays.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import xxhash

_WORD = re.compile(r"\w+")
_MASK32 = np.uint64(0xFFFFFFFF)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_FLUSH_ROWS = 8192


def shingles(text: str, k: int) -> list[str]:
    words = _WORD.findall(text.lower())
    if len(words) <= k:
        return [" ".join(words)]
    return [" ".join(words[i : i + k]) for i in range(len(words) - k + 1)]


class MinHasher:
    def __init__(self, num_perm: int = 64, shingle_words: int = 5, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.k = shingle_words
        self.num_perm = num_perm

    def signature(self, text: str) -> np.ndarray:
        hashes = np.fromiter((xxhash.xxh64_intdigest(s.encode()) for s in shingles(text, self.k)), dtype=np.uint64)
        with np.errstate(over="ignore"):  # multiply-shift hashing wraps by design
            mixed = (hashes[:, None] * self.a[None, :] + self.b[None, :]) >> np.uint64(32)
        return (mixed & _MASK32).min(axis=0).astype(np.uint32)


def _later_duplicates(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(later, first) index pairs of rows whose key equals an earlier row's."""
    n = len(keys)
    order = np.argsort(keys, kind="stable")  # stable: within a run of equal keys, rows ascend
    sk = keys[order]
    change = np.ones(n, dtype=bool)
    change[1:] = sk[1:] != sk[:-1]
    run_start = np.maximum.accumulate(np.where(change, np.arange(n), 0))
    dup = np.flatnonzero(~change)
    return order[dup], order[run_start[dup]]


class DedupIndex:
    def __init__(self, workdir: Path, exact: bool = True, near: bool = True, num_perm: int = 64, bands: int = 16,
                 threshold: float = 0.85, shingle_words: int = 5):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.exact, self.near = exact, near
        self.hasher = MinHasher(num_perm, shingle_words)
        self.bands, self.r, self.threshold = bands, num_perm // bands, threshold
        self.n = 0
        self._keys: list[int] = []
        self._sigs: list[np.ndarray] = []
        self._files = {"keys": open(self.dir / "keys.u64", "wb"), "sigs": open(self.dir / "sigs.u32", "wb")}
        self._band_files = [open(self.dir / f"band{b}.u64", "wb") for b in range(bands)] if near else []

    def add(self, key: int, text: str) -> None:
        self._keys.append(key)
        if self.near:
            self._sigs.append(self.hasher.signature(text))
        self.n += 1
        if len(self._keys) >= _FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        np.asarray(self._keys, dtype=np.uint64).tofile(self._files["keys"])
        if self._sigs:
            sigs = np.stack(self._sigs)
            sigs.tofile(self._files["sigs"])
            wide = sigs.astype(np.uint64)
            for b, fh in enumerate(self._band_files):
                band = np.zeros(len(sigs), dtype=np.uint64)
                with np.errstate(over="ignore"):
                    for j in range(b * self.r, (b + 1) * self.r):
                        band = band * _MIX + wide[:, j]
                band.tofile(fh)
        self._keys, self._sigs = [], []

    def duplicates(self) -> tuple[dict[int, int], dict[int, int]]:
        """({row: earlier identical row}, {row: earlier near-identical row})."""
        self._flush()
        for fh in [*self._files.values(), *self._band_files]:
            fh.close()
        exact: dict[int, int] = {}
        if self.exact and self.n > 1:
            later, first = _later_duplicates(np.fromfile(self.dir / "keys.u64", dtype=np.uint64))
            exact = dict(zip(later.tolist(), first.tolist()))
        near: dict[int, int] = {}
        if self.near and self.n > 1:
            width = 4 * self.r * self.bands
            with open(self.dir / "sigs.u32", "rb") as sigs:
                def sig(row: int) -> np.ndarray:
                    # read, not mmap: touched pages of a map would count as resident memory
                    sigs.seek(row * width)
                    return np.frombuffer(sigs.read(width), dtype=np.uint32)

                for b in range(self.bands):
                    later, first = _later_duplicates(np.fromfile(self.dir / f"band{b}.u64", dtype=np.uint64))
                    for lt, ft in zip(later.tolist(), first.tolist()):
                        if lt in exact or lt in near:
                            continue
                        if float(np.mean(sig(ft) == sig(lt))) >= self.threshold:
                            near[lt] = exact.get(ft, ft)
        return exact, near

    def close(self) -> None:
        for fh in [*self._files.values(), *self._band_files]:
            fh.close()
        for p in self.dir.glob("*.u*"):
            p.unlink(missing_ok=True)
