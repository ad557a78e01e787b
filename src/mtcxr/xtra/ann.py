"""Approximate and exact nearest-neighbour search over the X-TRA memory.

The memory is the train split's L2-normalised, projected image and report embeddings; every index
here is an inner-product index, so a score is a cosine similarity. `make_index` makes one
(`index.kind`: flat = exact, ivf, hnsw), `search` and `search_excluding` query it in blocks (the
latter never returns an entry of the query's own patient), and `measure_recall` / `recall_at_k`
compare an approximate index with exact search, which the stage logs for the approximate kinds.

Exact search does not go through FAISS's own flat search: on the 2-core VM measured
(benchmarks/neighbours.md) IndexFlatIP.search, with the OpenBLAS bundled in the faiss-cpu wheel,
ran at about a sixth of a bare float32 matmul. `search` reads the flat index's vectors in place,
multiplies with torch a chunk of the memory at a time and keeps each query's top k by looking only
at the groups of scores whose maximum can enter it (same index, same results up to float rounding,
ties by entry id). Threads: `torch.set_num_threads` for exact search, `faiss.omp_set_num_threads`
for ivf/hnsw. Pure functions: no Snakemake, no files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faiss
import numpy as np
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw")
# FAISS's k-means warns below 39 training points per centroid: the most lists an IVF index may have.
MIN_POINTS_PER_LIST = 39
# FAISS's own default cap on k-means training points per centroid; more only slows training.
MAX_TRAIN_POINTS_PER_LIST = 256
# Scores held at once by exact search, per query block (float32: 32 MiB), whatever the memory's size.
SCORE_BUFFER_ELEMENTS = 8 * 2**20
# Columns whose maximum exact search takes before looking at their scores one by one.
GROUP = 64


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """`x` as a C-contiguous float32 (n, d) array; ValueError when it is not two-dimensional."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dim); got shape {x.shape}")
    return x


def make_index(
    vectors: np.ndarray,
    kind: str = "flat",
    *,
    nlist: int = 1024,
    nprobe: int = 64,
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 128,
    seed: int = 0,
) -> faiss.Index:
    """Return an inner-product FAISS index of `kind` (flat, ivf, hnsw) holding `vectors` as ids 0..n-1.

    flat: IndexFlatIP, exact. ivf: IndexIVFFlat (METRIC_INNER_PRODUCT, spherical k-means) trained on a
    seeded sample of at most 256 vectors per list, with `nlist` capped at one list per 39 vectors
    (FAISS's training minimum; the cap is logged) and `nprobe` lists searched. hnsw: IndexHNSWFlat
    (METRIC_INNER_PRODUCT) with `hnsw_m` links, `ef_construction` and `ef_search`.

    Deterministic for a fixed seed at any thread count, so no thread setting is touched: the k-means
    seed and training sample come from `seed`, IVF assignment is exact, and FAISS 1.15's HNSW build is
    its deterministic, thread-count-independent one (levels drawn from `seed`).
    """
    x = _as_matrix(vectors, "vectors")
    n, d = x.shape
    if n == 0:
        raise ValueError("cannot build an index over no vectors: the memory is empty")
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        cap = max(1, n // MIN_POINTS_PER_LIST)
        if nlist > cap:
            log.warning(
                "index.nlist %d capped at %d: %d entries, and IVF needs at least %d per list to train",
                nlist,
                cap,
                n,
                MIN_POINTS_PER_LIST,
            )
            nlist = cap
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.spherical = True  # centroids on the unit sphere, like the vectors they stand for
        rng = np.random.default_rng(seed)
        size = min(n, nlist * MAX_TRAIN_POINTS_PER_LIST)
        sample = np.sort(rng.choice(n, size=size, replace=False)) if size < n else slice(None)
        index.train(x[sample])
        index.nprobe = min(nprobe, nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        index.hnsw.rng = faiss.RandomGenerator(seed)  # the levels nodes are drawn at
    else:
        raise ValueError(f"index.kind must be one of {', '.join(KINDS)}; got {kind!r}")
    index.add(x)
    return index


def _flat_vectors(index: faiss.Index) -> np.ndarray | None:
    """The (n, d) float32 vectors of an exact inner-product flat index (a view, no copy), else None."""
    if not isinstance(index, faiss.IndexFlat) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    if index.ntotal == 0:
        return np.empty((0, index.d), dtype=np.float32)
    return faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)


def _merge(
    best_scores: torch.Tensor, best_ids: torch.Tensor, rows: torch.Tensor, scores: torch.Tensor, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return each row's k best of its running best (B, k) and the candidates (rows, scores, ids), best first.

    Candidates come in row order, ascending id within a row (as torch.nonzero yields them); they are
    laid out densely beside the running best and each row is sorted stably, so equal scores keep the
    running best (an earlier chunk: lower ids) first, then ascending id.
    """
    n_rows, k = best_scores.shape
    counts = torch.bincount(rows, minlength=n_rows)
    rank = torch.arange(len(rows)) - (torch.cumsum(counts, 0) - counts)[rows]
    width = int(counts.max())
    dense_scores = torch.full((n_rows, width), -torch.inf)
    dense_ids = torch.full((n_rows, width), -1, dtype=torch.int64)
    dense_scores[rows, rank], dense_ids[rows, rank] = scores, ids
    all_scores, all_ids = torch.cat([best_scores, dense_scores], 1), torch.cat([best_ids, dense_ids], 1)
    top_scores, order = torch.sort(all_scores, dim=1, descending=True, stable=True)
    return top_scores[:, :k].contiguous(), torch.gather(all_ids, 1, order[:, :k])


def _candidates(
    scores: torch.Tensor, kth: torch.Tensor, floor: torch.Tensor, rows: torch.Tensor, first_col: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, scores, cols) of the `scores` (n, width) of `rows` above kth and at least floor, in row order."""
    at, col = torch.nonzero((scores > kth[rows]) & (scores >= floor[rows]), as_tuple=True)
    return rows[at], scores[at, col], first_col[at] + col


def _exact_block(
    entries: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    buffer: torch.Tensor,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the top-k (scores, ids) of each query against all entries but its `exclude` (row, entry) pairs.

    The memory is scored a chunk at a time into `buffer` (no allocation per chunk). A full top-k over
    every score would cost about half as much as the matmul itself on the CPUs measured, so each chunk
    is cut into groups of GROUP columns and only the groups whose maximum can enter a row's top-k are
    looked at: a score is a candidate when it beats the row's k-th best so far (strictly, so on a tie
    the entry already held, the lower id, stays), and in the first chunk when it reaches the chunk's
    k-th largest group maximum (at most the chunk's own k-th best). Candidates are merged into the
    running best, ties by ascending id. Excluded pairs are set to -inf first, so no over-fetch is
    needed; a row with fewer than k other entries comes back with id -1 at -inf. Memory: the buffer
    plus O(block x k).

    The matmul and the group maxima run on torch's threads, the rest on one: those operations are
    small, and with another job on the machine a second thread made them up to 8x slower.
    """
    n_rows = queries.shape[0]
    chunk = min(buffer.numel() // n_rows, entries.shape[0])
    ex_rows = ex_entries = None
    if exclude is not None:  # pairs sorted by entry, so each chunk takes one contiguous run
        order = np.argsort(exclude[1], kind="stable")
        ex_rows, ex_entries = (torch.from_numpy(np.ascontiguousarray(a[order])) for a in exclude)
    best = (torch.full((n_rows, k), -torch.inf), torch.full((n_rows, k), -1, dtype=torch.int64))
    threads = torch.get_num_threads()
    try:
        for start in range(0, entries.shape[0], chunk):
            part = entries[start : start + chunk]
            out = buffer[: n_rows * len(part)].view(n_rows, len(part))  # contiguous whatever the width
            torch.matmul(queries, part.T, out=out)
            if ex_rows is not None:
                lo, hi = np.searchsorted(ex_entries.numpy(), [start, start + len(part)])
                out[ex_rows[lo:hi], ex_entries[lo:hi] - start] = -torch.inf
            best = _select(out, start, *best, threads)
    finally:
        torch.set_num_threads(threads)
    return best[0].numpy(), best[1].numpy()


def _select(
    out: torch.Tensor, start: int, best_scores: torch.Tensor, best_ids: torch.Tensor, threads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the running best (scores, ids) updated with one chunk's scores `out` (entries from `start`)."""
    n_rows, width = out.shape
    k = best_scores.shape[1]
    kth = best_scores[:, -1:]
    n_groups = width // GROUP
    grouped = torch.as_strided(out, (n_rows, n_groups, GROUP), (width, GROUP, 1))
    torch.set_num_threads(threads)
    group_max = grouped.amax(dim=2)
    torch.set_num_threads(1)
    if start == 0 and n_groups >= k:  # nothing held yet: only the k best groups can hold the top k
        floor = torch.topk(group_max, k, dim=1).values[:, -1:]
    else:  # later chunks: the k-th best held is the bound (a floor per chunk would cost more than it saves)
        floor = torch.full_like(kth, -torch.inf)
    rows, groups = torch.nonzero((group_max > kth) & (group_max >= floor), as_tuple=True)
    if len(rows):  # whole groups of GROUP contiguous scores: one cheap copy each
        found_rows, found, cols = _candidates(grouped[rows, groups], kth, floor, rows, groups * GROUP)
        if len(found_rows):
            best_scores, best_ids = _merge(best_scores, best_ids, found_rows, found, cols + start)
    if width > n_groups * GROUP:  # the memory's last < GROUP columns, looked at one by one
        found_rows, found, cols = _candidates(
            out[:, n_groups * GROUP :],
            best_scores[:, -1:],
            floor,
            torch.arange(n_rows),
            torch.full((n_rows,), n_groups * GROUP),
        )
        if len(found_rows):
            best_scores, best_ids = _merge(best_scores, best_ids, found_rows, found, cols + start)
    torch.set_num_threads(threads)  # the next matmul
    return best_scores, best_ids


def _sorted_padded(
    scores: np.ndarray, ids: np.ndarray, k: int, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the first k of each row's kept (scores, ids) by descending score, ties by ascending id.

    Rows with fewer than k kept entries are padded with id -1 and score -inf; so is any id -1 FAISS
    returned (an IVF probe or HNSW walk that found fewer than asked).
    """
    valid = ids >= 0
    keep = valid if keep is None else keep & valid
    # lexsort's last key is the primary one: kept first, then higher score, then lower id.
    order = np.lexsort((ids, -scores, ~keep), axis=-1)[:, :k]
    out_scores = np.take_along_axis(scores, order, 1).astype(np.float32)
    out_ids = np.take_along_axis(ids, order, 1).astype(np.int64)
    kept = np.take_along_axis(keep, order, 1)
    out_scores[~kept], out_ids[~kept] = -np.inf, -1
    if out_ids.shape[1] < k:
        pad = k - out_ids.shape[1]
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        out_ids = np.pad(out_ids, ((0, 0), (0, pad)), constant_values=-1)
    return out_scores, out_ids


class _Searcher:
    """Runs blocks of queries against one index: `_exact_block` for a flat index, FAISS's search otherwise."""

    def __init__(self, index: faiss.Index, block_size: int) -> None:
        # block_size: the most queries one call gets (the score buffer is sized for it)
        self.index, self.block_size = index, max(1, block_size)
        vectors = _flat_vectors(index)
        self.entries = None if vectors is None else torch.from_numpy(vectors)
        self.buffer = None

    @property
    def exact(self) -> bool:
        """Whether this searcher scores every entry (a flat index) and so can mask entries itself."""
        return self.entries is not None

    def __call__(
        self, queries: np.ndarray, fetch: int, exclude: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the raw (scores, ids) of the `fetch` best entries of each query (FAISS order or none).

        `exclude` ((row, entry) pairs scored -inf) is for exact search only; FAISS indexes ignore it.
        """
        fetch = min(fetch, self.index.ntotal)
        if fetch == 0:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        if self.entries is None:
            scores, ids = self.index.search(queries, fetch)
            return scores, ids
        if self.buffer is None:  # flat storage: every chunk's (rows x width) view of it is contiguous
            chunk = max(GROUP, min(self.index.ntotal, SCORE_BUFFER_ELEMENTS // self.block_size))
            self.buffer = torch.empty(self.block_size * chunk, dtype=torch.float32)
        if not queries.flags.writeable:  # torch.from_numpy warns on read-only arrays (Arrow, memory maps)
            queries = queries.copy()
        return _exact_block(self.entries, torch.from_numpy(queries), fetch, self.buffer, exclude)


def _check(index: faiss.Index, queries: np.ndarray, k: int, block_size: int) -> np.ndarray:
    """`queries` as float32 (Q, d) after checking k, block_size and the dimension against the index."""
    if k < 1:
        raise ValueError(f"k must be at least 1; got {k}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1; got {block_size}")
    queries = _as_matrix(queries, "queries")
    if queries.shape[1] != index.d:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the index {index.d}")
    return queries


def _blocks(n: int, block_size: int) -> Iterator[slice]:
    """Consecutive slices of at most block_size rows covering range(n)."""
    for start in range(0, n, block_size):
        yield slice(start, min(start + block_size, n))


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    block_size: int = 1024,
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (scores float32 (Q, k), ids int64 (Q, k)): each query's k best entries, best first.

    Queries run `block_size` at a time (a tqdm bar titled `progress`, none when None), so memory is
    O(block_size x k) beyond the index (exact search adds a fixed 32 MiB score buffer). Equal scores
    are ordered by entry id. Where the index holds fewer than k entries (or an approximate index finds
    fewer), the row is padded with id -1 and score -inf.
    """
    queries = _check(index, queries, k, block_size)
    searcher = _Searcher(index, min(block_size, len(queries)))
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    with tqdm(total=len(queries), desc=progress, disable=progress is None, unit="query") as bar:
        for rows in _blocks(len(queries), block_size):
            scores[rows], ids[rows] = _sorted_padded(*searcher(queries[rows], k), k)
            bar.update(rows.stop - rows.start)
    return scores, ids


class _Groups:
    """The memory's entries by group: which entries share a query's group, found by binary search."""

    def __init__(self, entry_groups: np.ndarray) -> None:
        self.order = np.argsort(entry_groups, kind="stable")
        self.sorted = entry_groups[self.order]

    def ranges(self, query_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first, end) positions in the sorted entries of each query's group."""
        return (np.searchsorted(self.sorted, query_groups, "left"), np.searchsorted(self.sorted, query_groups, "right"))

    def members(self, query_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, entry) pairs: every entry of each query's own group, with the query's row number."""
        first, end = self.ranges(query_groups)
        sizes = end - first
        rows = np.repeat(np.arange(len(query_groups)), sizes)
        within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return rows, self.order[np.repeat(first, sizes) + within]


def own_group_sizes(query_groups: np.ndarray, entry_groups: np.ndarray) -> np.ndarray:
    """Return, for each query, how many memory entries share its group (0 for a group not in the memory)."""
    first, end = _Groups(np.asarray(entry_groups, dtype=np.int64)).ranges(np.asarray(query_groups, dtype=np.int64))
    return end - first


def search_excluding(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    query_groups: np.ndarray,
    entry_groups: np.ndarray,
    block_size: int = 1024,
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (scores float32 (Q, k), ids int64 (Q, k)): each query's k best entries of another group.

    groups are int64 codes (the caller maps patient_id strings to codes); `entry_groups[i]` is entry
    i's group. Results are ordered by score, ties by entry id. Exact search (a flat index) scores the
    query's own group at -inf before selecting, so it fetches just k. An approximate index cannot be
    told which entries to skip per query, so each query over-fetches k + the number of entries its own
    group holds in the memory (only those can be dropped; rounded up to a power of two so that queries
    share fetch sizes and run in blocks together: never more than k + twice the largest group), drops
    them and keeps the first k. Either way k valid entries always come back when the memory holds at
    least k entries of other groups; where it holds fewer (a tiny memory), or an approximate index finds
    fewer, the row is padded with id -1 and score -inf and the caller decides (mask the missing
    neighbours, or fail). Equal scores at the cut-off are resolved by the underlying search.
    """
    queries = _check(index, queries, k, block_size)
    query_groups = np.asarray(query_groups, dtype=np.int64)
    entry_groups = np.asarray(entry_groups, dtype=np.int64)
    if query_groups.shape != (len(queries),):
        raise ValueError(f"query_groups must hold one group per query ({len(queries)}); got shape {query_groups.shape}")
    if entry_groups.shape != (index.ntotal,):
        raise ValueError(f"entry_groups must hold one group per entry ({index.ntotal}); got shape {entry_groups.shape}")
    groups = _Groups(entry_groups)
    searcher = _Searcher(index, min(block_size, len(queries)))
    if searcher.exact:
        fetch = np.full(len(queries), k, dtype=np.int64)
    else:
        first, end = groups.ranges(query_groups)
        own = end - first
        extra = np.where(own > 0, 2 ** np.ceil(np.log2(np.maximum(own, 1))).astype(np.int64), 0)
        fetch = k + extra
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    with tqdm(total=len(queries), desc=progress, disable=progress is None, unit="query") as bar:
        for size in np.unique(fetch):
            rows_of_size = np.flatnonzero(fetch == size)
            for block in _blocks(len(rows_of_size), block_size):
                rows = rows_of_size[block]
                exclude = groups.members(query_groups[rows]) if searcher.exact else None
                raw_scores, raw_ids = searcher(queries[rows], int(size), exclude)
                # Drop the own group (already at -inf for exact search) and FAISS's missing results.
                other = entry_groups[np.maximum(raw_ids, 0)] != query_groups[rows, None]
                scores[rows], ids[rows] = _sorted_padded(raw_scores, raw_ids, k, other)
                bar.update(len(rows))
    return scores, ids


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Return the mean over queries of |approx top-k ∩ exact top-k| / k.

    Padding ids (-1) never count. A row whose exact top-k holds fewer than k real entries (a tiny
    memory) is divided by that number instead, so a perfect search still scores 1; rows with none are
    left out, and 1.0 is returned when every row is.
    """
    approx, exact = np.asarray(approx_ids)[:, :k], np.asarray(exact_ids)[:, :k]
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(f"approx_ids has {approx.shape[0]} rows, exact_ids {exact.shape[0]}")
    found = np.zeros(len(exact), dtype=np.int64)
    for rows in _blocks(len(exact), 4096):  # (rows x k x k) comparisons, a block at a time
        a, e = approx[rows], exact[rows]
        hit = (a[:, :, None] == e[:, None, :]).any(axis=2) & (a >= 0)
        found[rows] = hit.sum(axis=1)
    real = (exact >= 0).sum(axis=1)
    scored = real > 0
    return float(np.mean(found[scored] / real[scored])) if scored.any() else 1.0


def sample_queries(n_queries: int, size: int, seed: int = 0) -> np.ndarray:
    """Return sorted row numbers of a seeded sample of min(size, n_queries) queries (index.recall_sample)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_queries, size=min(size, n_queries), replace=False))


def measure_recall(
    index: faiss.Index,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    query_groups: np.ndarray | None = None,
    entry_groups: np.ndarray | None = None,
    block_size: int = 1024,
) -> float:
    """Return recall@k of `index` against exact search over `vectors` (the vectors it holds) on `queries`.

    Pass the query sample (see `sample_queries`), not every query: exact search costs as much per query
    as the whole approximate one is meant to save. With `query_groups` and `entry_groups` both sides
    run `search_excluding`, as the stage does; without, plain `search`.
    """
    exact = make_index(vectors, "flat")
    if exact.ntotal != index.ntotal:
        raise ValueError(f"vectors hold {exact.ntotal} entries, the index {index.ntotal}")
    if (query_groups is None) != (entry_groups is None):
        raise ValueError("give both query_groups and entry_groups, or neither")
    if query_groups is None:
        run = lambda ix: search(ix, queries, k, block_size)  # noqa: E731
    else:
        run = lambda ix: search_excluding(ix, queries, k, query_groups, entry_groups, block_size)  # noqa: E731
    return recall_at_k(run(index)[1], run(exact)[1], k)
