"""Retrieval and clinical-relevance metrics (docs/design.md, Metrics): pure functions over NumPy arrays.

Search is exact and blocked over queries, so memory is O(block × keys) and the full query × key
similarity matrix is never held (docs/design.md, Performance principles). Rankings break score ties by the lower key index, and
`topk_search` and `first_hit_ranks` share one scoring routine so they agree on every tie.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np

# scikit-learn is imported where it is used, and torch nowhere: the evaluation, summary, figure and scoring
# jobs that use the functions here start seconds sooner (per-job start-up dominates a small run).

log = logging.getLogger(__name__)

# Upper bound on the elements of one block of bootstrap resample indices (int64): 32 MiB, so a
# Q=50k, n_boot=1000 bootstrap runs in bounded memory instead of a 400 MB index matrix.
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22
# Paired differences within this fraction of the values' magnitude are float rounding, not effects.
# A mean of Q float64 values is off by about log2(Q)·2.2e-16 of their scale (numpy sums pairwise):
# under 1e-14 for Q up to 10^9. A real difference of means over Q queries of a metric that moves in
# steps of 1/k (Recall, Precision@k, ...) is at least about 1 / (k·Q): 1e-9 for Q = 10^6, k = 1000.
# 1e-12 sits two orders of magnitude above the noise and three below the smallest real effect.
PAIRED_ZERO_TOLERANCE = 1e-12


# --------------------------------------------------------------------------------------------------
# Exact blocked search
# --------------------------------------------------------------------------------------------------


def _check_embeddings(queries: np.ndarray, keys: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return queries and keys as C-contiguous float32 arrays after checking shapes and values."""
    if queries.ndim != 2 or keys.ndim != 2:
        raise ValueError(f"queries and keys must be 2-D, got shapes {queries.shape} and {keys.shape}")
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]} but keys have {keys.shape[1]}")
    if keys.shape[0] == 0:
        raise ValueError("keys is empty: there is nothing to retrieve")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    queries32 = np.ascontiguousarray(queries, dtype=np.float32)
    keys32 = np.ascontiguousarray(keys, dtype=np.float32)
    # A NaN score compares false with everything and would silently corrupt ranks.
    for name, array in (("queries", queries32), ("keys", keys32)):
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contain NaN or infinite values")
    return queries32, keys32


# One block of scores is at most this large: the buffer is written over for every block, so its pages are
# touched once per search. A fresh 800 MB block per 4,096 queries cost a fifth of the GEMM in page faults.
_SCORE_BUFFER_BYTES = 256 << 20


def _score_blocks(queries: np.ndarray, keys: np.ndarray, block_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first query index, float32 inner products of a block of queries with all keys).

    Search is NumPy alone (OpenBLAS's GEMM, with as many threads as the BLAS is given: a Snakemake job's
    `threads`): torch's CPU wheels use MKL, whose SGEMM ran 1.5x slower than OpenBLAS's on the AMD EPYC VM
    (benchmarks/README.md, Exact top-k search), FAISS's flat index, the peer this search is measured
    against, uses OpenBLAS too, and an evaluation job that never imports torch starts 4 CPU s sooner.
    Every block is written into the same buffer (at most `block_size` rows and _SCORE_BUFFER_BYTES): a
    caller must be done with one block before asking for the next, as both callers are (each reduces a
    block to a few numbers per query at once).
    """
    keys_t = keys.T
    n_queries, n_keys = queries.shape[0], keys.shape[0]
    rows = max(1, min(block_size, n_queries, _SCORE_BUFFER_BYTES // (4 * n_keys)))
    buffer = np.empty((rows, n_keys), dtype=np.float32)
    for start in range(0, n_queries, rows):
        scores = buffer[: min(rows, n_queries - start)]  # leading rows of a row-major buffer: contiguous
        np.matmul(queries[start : start + rows], keys_t, out=scores)
        yield start, scores


# Columns per group of the top-k prefilter (_top_candidates): 64 floats, one cache line's multiple.
_GROUP = 64


def _largest(values: np.ndarray, m: int) -> np.ndarray:
    """Column indices of the m largest values of each row, in no particular order (any among equals)."""
    if m >= values.shape[1]:
        return np.broadcast_to(np.arange(values.shape[1]), values.shape)
    return np.argpartition(values, values.shape[1] - m, axis=1)[:, values.shape[1] - m :]


def _strided_groups(scores: np.ndarray, n_groups: int) -> np.ndarray:
    """A (rows, _GROUP, n_groups) view of the first _GROUP·n_groups columns of each row (no copy)."""
    row_stride, column_stride = scores.strides
    return np.lib.stride_tricks.as_strided(
        scores, (scores.shape[0], _GROUP, n_groups), (row_stride, n_groups * column_stride, column_stride)
    )


def _blas_threads() -> int:
    """The threads the BLAS computes on (a Snakemake job's `threads`; all cores by default)."""
    from threadpoolctl import threadpool_info

    return max([pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"] or [1])


def _row_bands(scores: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`reduce` applied to bands of rows on the BLAS's threads (NumPy releases the GIL), results stacked."""
    threads = min(_blas_threads(), max(1, scores.shape[0] // 64))
    if threads == 1:
        return reduce(scores)
    from concurrent.futures import ThreadPoolExecutor

    bands = np.array_split(np.arange(scores.shape[0]), threads)
    with ThreadPoolExecutor(threads) as pool:
        return np.concatenate(list(pool.map(lambda rows: reduce(scores[rows[0] : rows[-1] + 1]), bands)))


def _top_candidates(scores: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The m highest scores of each row, descending, and their columns (any order among equal scores).

    A full top-k pass over a wide block costs as much as a third of its GEMM. Instead: the maximum of each
    group of _GROUP columns (one cheap pass), the m groups with the highest maxima, and the top m among
    their columns and the last columns that fill no group. Exact for the values: a column outside the
    chosen groups is at most the m-th chosen group's maximum, itself at most the m-th value found, so it
    can only tie with that value, never displace one (topk_search resolves ties at the boundary from the
    whole row).
    """
    n_rows, width = scores.shape
    n_groups = width // _GROUP
    if n_groups < 4 * m:  # too few groups for the prefilter to save anything
        columns = _largest(scores, m)
    else:
        # Group g is the columns g, g + n_groups, g + 2·n_groups, ...: its maximum is then an element-wise
        # maximum of _GROUP contiguous row slices, which NumPy vectorises (the maximum over 64 adjacent
        # columns ran 2.5x slower), taken on the BLAS's threads, one band of rows each.
        group_max = _row_bands(scores, lambda band: _strided_groups(band, n_groups).max(axis=1))
        groups = _largest(group_max, m)
        columns = (groups[:, :, None] + n_groups * np.arange(_GROUP)).reshape(n_rows, -1)
        if width > n_groups * _GROUP:
            tail = np.broadcast_to(np.arange(n_groups * _GROUP, width), (n_rows, width - n_groups * _GROUP))
            columns = np.concatenate([columns, tail], axis=1)
        columns = np.take_along_axis(columns, _largest(np.take_along_axis(scores, columns, axis=1), m), axis=1)
    values = np.take_along_axis(scores, columns, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(columns, order, axis=1).astype(np.int64)


def _topk_block(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one score block, by descending score then ascending key index."""
    # One extra candidate tells which rows have more keys tied at the k-th score than fit: exactly those
    # whose (k+1)-th score equals their k-th. Only they take the slow path below; no second pass over
    # the whole block (a full `scores >= threshold` count cost as much as the top-k itself).
    extra = min(k + 1, scores.shape[1])
    values, indices = _top_candidates(scores, extra)
    boundary_ties = np.flatnonzero(values[:, k] == values[:, k - 1]) if extra > k else []
    values, indices = values[:, :k], indices[:, :k]
    # The prefilter picks arbitrarily among keys tied with the k-th score; where more keys tie at that
    # boundary than fit, rebuild the row from the strictly higher keys plus the lowest-index ties.
    threshold = values[:, -1]
    for row in boundary_ties:
        row_scores = scores[row]
        higher = np.flatnonzero(row_scores > threshold[row])
        tied = np.flatnonzero(row_scores == threshold[row])[: k - higher.size]
        chosen = np.concatenate([higher, tied])
        indices[row] = chosen
        values[row] = row_scores[chosen]
    # Order within the top-k is fixed here, independent of the prefilter's order among equal scores.
    order = np.lexsort((indices, -values), axis=-1)
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(indices, order, axis=1)


def topk_search(queries: np.ndarray, keys: np.ndarray, k: int, block_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Return (scores (Q, k') float32, key indices (Q, k') int64) of each query's top k' = min(k, N) keys.

    Scores are float32 inner products (embeddings are L2-normalised upstream, so these are cosines),
    sorted by descending score with ties broken by the lower key index. Queries are processed in
    blocks of `block_size`, so peak memory is O(block_size × N).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries, keys = _check_embeddings(queries, keys, block_size)
    k = min(k, keys.shape[0])
    n_queries = queries.shape[0]
    top_scores = np.empty((n_queries, k), dtype=np.float32)
    top_indices = np.empty((n_queries, k), dtype=np.int64)
    for start, scores in _score_blocks(queries, keys, block_size):
        stop = start + scores.shape[0]
        top_scores[start:stop], top_indices[start:stop] = _topk_block(scores, k)
    return top_scores, top_indices


def _targets_csr(
    query_targets: Sequence[np.ndarray] | np.ndarray, n_queries: int, n_keys: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (offsets (Q+1,), flat target key indices) from per-query target lists.

    Accepts a list of index arrays, a 1-D integer array (one target per query) or a 2-D integer
    array (the same number of targets per query).
    """
    if isinstance(query_targets, np.ndarray) and query_targets.dtype != object:
        if query_targets.ndim == 1:
            query_targets = query_targets[:, None]
        if query_targets.ndim != 2:
            raise ValueError(f"query_targets array must be 1-D or 2-D, got shape {query_targets.shape}")
        rows = list(query_targets)
    else:
        rows = [np.asarray(targets).reshape(-1) for targets in query_targets]
    if len(rows) != n_queries:
        raise ValueError(f"{n_queries} queries but {len(rows)} target lists")
    lengths = np.fromiter((len(targets) for targets in rows), dtype=np.int64, count=n_queries)
    if n_queries and lengths.min() == 0:
        raise ValueError(f"query {int(np.argmin(lengths))} has no target: every query needs at least one hit")
    offsets = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(rows).astype(np.int64) if n_queries else np.empty(0, dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= n_keys):
        raise ValueError(f"target key indices must lie in [0, {n_keys}), got range [{flat.min()}, {flat.max()}]")
    return offsets, flat


def first_hit_ranks(
    queries: np.ndarray,
    keys: np.ndarray,
    query_targets: Sequence[np.ndarray] | np.ndarray,
    block_size: int = 4096,
) -> np.ndarray:
    """Return the 1-based rank (Q,) int64 of each query's best-ranked relevant key.

    `query_targets[i]` holds the indices of the keys that count as hits for query i (at least one).
    The rank is exact and consistent with `topk_search`: 1 + the number of keys scoring strictly
    higher than the best target + the number of keys tied with it at a lower index. Blocked over
    queries, memory O(block_size × N).
    """
    queries, keys = _check_embeddings(queries, keys, block_size)
    n_queries, n_keys = queries.shape[0], keys.shape[0]
    offsets, flat_targets = _targets_csr(query_targets, n_queries, n_keys)
    key_positions = np.arange(n_keys)
    ranks = np.empty(n_queries, dtype=np.int64)
    for start, scores in _score_blocks(queries, keys, block_size):
        stop = start + scores.shape[0]
        block_targets = flat_targets[offsets[start] : offsets[stop]]
        block_lengths = np.diff(offsets[start : stop + 1])
        target_rows = np.repeat(np.arange(stop - start), block_lengths)
        target_scores = scores[target_rows, block_targets]
        # The best-ranked target is the highest-scoring one, the lowest index among equals; after
        # sorting by (row, -score, index) it is the first entry of each row's segment.
        order = np.lexsort((block_targets, -target_scores, target_rows))
        segment_starts = offsets[start:stop] - offsets[start]
        best_key = block_targets[order][segment_starts][:, None]
        best_score = target_scores[order][segment_starts][:, None]
        higher = np.count_nonzero(scores > best_score, axis=1)
        tied_before = np.count_nonzero((scores == best_score) & (key_positions < best_key), axis=1)
        ranks[start:stop] = 1 + higher + tied_before
    return ranks


# --------------------------------------------------------------------------------------------------
# Rank-based retrieval metrics
# --------------------------------------------------------------------------------------------------


def recall_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Return per-query Recall@k (Q,) float64: 1.0 where the first hit ranks within the top k, else 0.0."""
    return (np.asarray(ranks) <= k).astype(np.float64)


def median_rank(ranks: np.ndarray) -> float:
    """Return the median of the 1-based first-hit ranks."""
    return float(np.median(ranks))


def mean_rank(ranks: np.ndarray) -> float:
    """Return the mean of the 1-based first-hit ranks."""
    return float(np.mean(ranks))


# --------------------------------------------------------------------------------------------------
# Clinical relevance over the retrieved lists
# --------------------------------------------------------------------------------------------------


def _top_columns(retrieved: np.ndarray, k: int) -> np.ndarray:
    """Return the first min(k, K) retrieved columns; fewer than k exist when the gallery is smaller."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if retrieved.ndim < 2 or retrieved.shape[1] == 0:
        raise ValueError(f"retrieved lists must have shape (Q, K, ...) with K >= 1, got {retrieved.shape}")
    return retrieved[:, :k]


def precision_at_k(relevant: np.ndarray, k: int) -> np.ndarray:
    """Return per-query Precision@k (Q,) float64: the fraction of the top k retrieved that are relevant.

    `relevant` (Q, K) bool marks the relevant items in each ranked retrieved list. When fewer than k
    items were retrieved (K < k, a gallery smaller than k) the fraction is over the K retrieved.
    """
    top = _top_columns(np.asarray(relevant, dtype=bool), k)
    return top.mean(axis=1, dtype=np.float64)


def average_precision_at_k(relevant: np.ndarray, k: int) -> np.ndarray:
    """Return per-query AP@k (Q,) float64 over ranked relevance flags `relevant` (Q, K) bool.

    AP@k = (1 / R_k) · Σ_{i ≤ k, item i relevant} Precision@i, where R_k is the number of relevant
    items among the top k; it is 0 when none of the top k is relevant. Normalising by R_k (not by the
    number of relevant items in the whole gallery) is the usual retrieval mAP@k for large galleries
    where every class has far more than k members. mAP@k is the mean of this over queries.
    """
    top = _top_columns(np.asarray(relevant, dtype=bool), k)
    hits_so_far = np.cumsum(top, axis=1, dtype=np.float64)
    precision_at_i = hits_so_far / np.arange(1, top.shape[1] + 1)
    n_relevant = hits_so_far[:, -1]
    summed = np.where(top, precision_at_i, 0.0).sum(axis=1)
    return np.divide(summed, n_relevant, out=np.zeros_like(summed), where=n_relevant > 0)


def _group_statistic(values: np.ndarray, groups: np.ndarray, statistic: Callable[..., np.ndarray] = np.mean) -> float:
    """Return the mean over groups of `statistic` within each group."""
    values = np.asarray(values)
    groups = np.asarray(groups)
    if values.shape[0] != groups.shape[0]:
        raise ValueError(f"{values.shape[0]} values but {groups.shape[0]} group labels")
    if values.shape[0] == 0:
        raise ValueError("no values to average")
    return float(np.mean([statistic(values[groups == group]) for group in np.unique(groups)]))


def _check_label_sets(query_labels: np.ndarray, retrieved_labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (query labels (Q, 1, L), top-k retrieved labels (Q, k', L)) as bool after checking shapes."""
    query_labels = np.asarray(query_labels, dtype=bool)
    retrieved_labels = np.asarray(retrieved_labels, dtype=bool)
    if query_labels.ndim != 2 or retrieved_labels.ndim != 3:
        raise ValueError(
            f"expected query_labels (Q, L) and retrieved_labels (Q, K, L), got {query_labels.shape} "
            f"and {retrieved_labels.shape}"
        )
    if query_labels.shape[0] != retrieved_labels.shape[0] or query_labels.shape[1] != retrieved_labels.shape[2]:
        raise ValueError(f"query_labels {query_labels.shape} do not match retrieved_labels {retrieved_labels.shape}")
    return query_labels[:, None, :], _top_columns(retrieved_labels, k)


def label_set_exact_match(query_labels: np.ndarray, retrieved_labels: np.ndarray, k: int) -> np.ndarray:
    """Return per-query (Q,) float64 fraction of the top k whose positive label set equals the query's.

    `query_labels` (Q, L) and `retrieved_labels` (Q, K, L) are bool positive-finding indicators;
    over min(k, K) items when fewer than k were retrieved.
    """
    query, top = _check_label_sets(query_labels, retrieved_labels, k)
    return (top == query).all(axis=2).mean(axis=1, dtype=np.float64)


def label_set_jaccard(query_labels: np.ndarray, retrieved_labels: np.ndarray, k: int) -> np.ndarray:
    """Return per-query (Q,) float64 mean Jaccard index between the query's and each top-k item's positive labels.

    Two empty label sets (e.g. two "No Finding" studies) count as Jaccard 1; over min(k, K) items
    when fewer than k were retrieved.
    """
    query, top = _check_label_sets(query_labels, retrieved_labels, k)
    intersection = (top & query).sum(axis=2)
    union = (top | query).sum(axis=2)
    jaccard = np.divide(intersection, union, out=np.ones(union.shape, dtype=np.float64), where=union > 0)
    return jaccard.mean(axis=1)


# --------------------------------------------------------------------------------------------------
# Bootstrap confidence intervals
# --------------------------------------------------------------------------------------------------


def _resampled(
    values: np.ndarray, n_boot: int, rng: np.random.Generator, statistic: Callable[..., np.ndarray]
) -> np.ndarray:
    """Return (n_boot,) values of `statistic` over resamples (with replacement) of `values`."""
    n = values.shape[0]
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        out[start : start + size] = statistic(values[rng.integers(0, n, size=(size, n))], axis=1)
    return out


def _bootstrap_distribution(
    values: np.ndarray,
    n_boot: int,
    seed: int,
    statistic: Callable[..., np.ndarray],
    groups: np.ndarray | None,
) -> tuple[float, np.ndarray]:
    """Return (statistic on the data, (n_boot,) resampled statistics).

    With `groups`, resampling is stratified (each group resampled within itself, so every class
    stays present) and the statistic is the mean over groups of `statistic` within each group.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValueError(f"per-query values must be a non-empty 1-D array, got shape {values.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    if groups is None:
        return float(statistic(values)), _resampled(values, n_boot, rng, statistic)
    groups = np.asarray(groups)
    observed = _group_statistic(values, groups, statistic)
    per_group = [_resampled(values[groups == group], n_boot, rng, statistic) for group in np.unique(groups)]
    return observed, np.mean(per_group, axis=0)


def _percentile_interval(distribution: np.ndarray, level: float) -> tuple[float, float]:
    """Return the (low, high) percentile interval holding `level` of the distribution."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    low, high = np.percentile(distribution, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(low), float(high)


def bootstrap_ci(
    per_query: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    statistic: Callable[..., np.ndarray] = np.mean,
    groups: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Return (value, low, high): the statistic and its seeded percentile-bootstrap interval over queries.

    `statistic` must accept an `axis` keyword (np.mean, np.median, ...). With `groups` (e.g. normal /
    abnormal per query) the value is the class-balanced statistic — the mean over groups of the
    within-group statistic — and resampling is stratified by group. Resamples are drawn in chunks of
    bounded size, so memory stays flat for Q=50k, n_boot=1000.
    """
    value, distribution = _bootstrap_distribution(per_query, n_boot, seed, statistic, groups)
    low, high = _percentile_interval(distribution, level)
    return value, low, high


def p_value_floor(n_boot: int) -> float:
    """Return 1 / (n_boot + 1), the smallest p-value a bootstrap of `n_boot` resamples can resolve."""
    return 1.0 / (n_boot + 1)


def paired_bootstrap(
    per_query_a: np.ndarray,
    per_query_b: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """Return {difference, ci_low, ci_high, p_value} for mean(b) − mean(a) over the same queries.

    Both arrays are resampled with the same query indices (the mean is linear, so this is the
    bootstrap of the per-query differences b − a); with `groups` the means are class-balanced and
    resampling is stratified. `p_value` is two-sided: twice the fraction of resamples whose
    difference is zero or of the opposite sign to the observed one, capped at 1 (1 when the observed
    difference is 0). Counting zero differences against the effect keeps the test conservative
    for 0/1 metrics such as Recall@k. No resample crossing zero means p is below the bootstrap's
    resolution, so p is at least `p_value_floor(n_boot)` = 1 / (n_boot + 1), never 0.

    Differences (observed, resampled and the interval's bounds) within `PAIRED_ZERO_TOLERANCE`
    times the largest |value| are float rounding and are exactly 0.0: identical metrics computed
    along different float paths give difference 0, interval [0, 0] and p = 1, not a sign.
    """
    a = np.asarray(per_query_a, dtype=np.float64)
    b = np.asarray(per_query_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays must have the same shape, got {a.shape} and {b.shape}")
    difference, distribution = _bootstrap_distribution(b - a, n_boot, seed, np.mean, groups)
    tolerance = PAIRED_ZERO_TOLERANCE * max(float(np.abs(a).max()), float(np.abs(b).max()))
    return _paired_result(difference, distribution, tolerance, n_boot, level)


def _paired_result(
    difference: float, distribution: np.ndarray, tolerance: float, n_boot: int, level: float
) -> dict[str, float]:
    """{difference, ci_low, ci_high, p_value} from a bootstrap distribution of a difference (see paired_bootstrap)."""

    def snap(value: float) -> float:
        # `0.0 if ...` also turns -0.0 into 0.0, which would otherwise print as "-0.000".
        return 0.0 if abs(value) <= tolerance else value

    difference = snap(difference)
    distribution = np.where(np.abs(distribution) <= tolerance, 0.0, distribution)
    low, high = (snap(bound) for bound in _percentile_interval(distribution, level))
    if difference > 0:
        p_value = 2.0 * float(np.mean(distribution <= 0))
    elif difference < 0:
        p_value = 2.0 * float(np.mean(distribution >= 0))
    else:
        p_value = 1.0
    p_value = min(1.0, max(p_value_floor(n_boot), p_value))
    return {"difference": difference, "ci_low": low, "ci_high": high, "p_value": p_value}


def seed_query_bootstrap(
    per_query: np.ndarray, n_boot: int = 1000, seed: int = 0, groups: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Return (observed, (n_boot,) resampled) mean over training seeds of a per-query mean.

    `per_query` is (S, Q): one row per training seed, the same Q test queries in every row. Each
    resample draws S seeds with replacement and Q queries with replacement (the same queries for
    every drawn seed, since all seeds answer the same test set), so the spread holds both the
    training-seed and the test-query variance. With `groups` the query means are class-balanced
    and queries are resampled within each group. With one seed this is the query bootstrap.
    """
    values = np.asarray(per_query, dtype=np.float64)
    if values.ndim != 2 or not values.shape[0] or not values.shape[1]:
        raise ValueError(f"per-query values must be a non-empty (seeds, queries) array, got shape {values.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n_seeds, n_queries = values.shape
    rng = np.random.default_rng(seed)
    # Seed weights: how often each seed was drawn, over S; a resample's value is the weighted mean.
    weights = np.stack([np.bincount(rng.integers(0, n_seeds, n_seeds), minlength=n_seeds) for _ in range(n_boot)])
    weights = weights / n_seeds
    masks = [np.ones(n_queries, dtype=bool)] if groups is None else [np.asarray(groups) == g for g in np.unique(groups)]
    observed = float(np.mean([values[:, mask].mean() for mask in masks]))
    resampled = np.zeros(n_boot, dtype=np.float64)
    for mask in masks:
        part = values[:, mask]
        chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // part.shape[1])
        for start in range(0, n_boot, chunk):
            stop = min(n_boot, start + chunk)
            weighted = weights[start:stop] @ part  # (chunk, Q_group): each resample's seed mixture per query
            picks = rng.integers(0, part.shape[1], size=weighted.shape)
            resampled[start:stop] += np.take_along_axis(weighted, picks, axis=1).mean(axis=1)
    return observed, resampled / len(masks)


def seed_query_ci(
    per_query: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95, groups: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Return (value, low, high): the across-seed mean of a per-query metric (S, Q) and its
    percentile interval under `seed_query_bootstrap`."""
    value, distribution = seed_query_bootstrap(per_query, n_boot, seed, groups)
    low, high = _percentile_interval(distribution, level)
    return value, low, high


def paired_bootstrap_seeds(
    per_query_a: np.ndarray,
    per_query_b: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """Return {difference, ci_low, ci_high, p_value} for b − a averaged over b's training seeds.

    `per_query_a` is the baseline's (Q,) values (an untrained variant: one run), `per_query_b` the
    (S, Q) values of S training seeds on the same queries. The differences b_s − a are resampled by
    `seed_query_bootstrap` (seeds and queries); CI and p-value are read as in `paired_bootstrap`.
    """
    a = np.asarray(per_query_a, dtype=np.float64)
    b = np.asarray(per_query_b, dtype=np.float64)
    if b.ndim != 2 or a.shape != b.shape[1:]:
        raise ValueError(f"expected baseline (Q,) and runs (S, Q), got {a.shape} and {b.shape}")
    difference, distribution = seed_query_bootstrap(b - a[None, :], n_boot, seed, groups)
    tolerance = PAIRED_ZERO_TOLERANCE * max(float(np.abs(a).max()), float(np.abs(b).max()))
    return _paired_result(difference, distribution, tolerance, n_boot, level)


# --------------------------------------------------------------------------------------------------
# Normal / abnormal separation
# --------------------------------------------------------------------------------------------------


def roc_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Return the ROC-AUC of `scores` for binary `targets`; NaN (with a warning) when only one class is present."""
    from sklearn.metrics import roc_auc_score

    targets = np.asarray(targets)
    if np.unique(targets).size < 2:
        log.warning("ROC-AUC is undefined with only one class among %d targets; reporting NaN", targets.size)
        return float("nan")
    return float(roc_auc_score(targets, scores))


def cosine_silhouette(embeddings: np.ndarray, classes: np.ndarray, max_samples: int = 5000, seed: int = 0) -> float:
    """Return the cosine silhouette score of `embeddings` grouped by `classes` (e.g. normal vs abnormal).

    Silhouette is O(n²) in time, so above `max_samples` rows a seeded uniform subsample (without
    replacement) is scored. NaN with a warning when fewer than two classes are present.
    """
    from sklearn.metrics import silhouette_score

    embeddings = np.asarray(embeddings)
    classes = np.asarray(classes)
    if embeddings.shape[0] != classes.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings but {classes.shape[0]} class labels")
    if embeddings.shape[0] > max_samples:
        chosen = np.sort(np.random.default_rng(seed).choice(embeddings.shape[0], size=max_samples, replace=False))
        embeddings, classes = embeddings[chosen], classes[chosen]
    n_classes = np.unique(classes).size
    if not 2 <= n_classes <= embeddings.shape[0] - 1:
        log.warning(
            "silhouette needs 2 to n-1 classes, got %d among %d samples; reporting NaN", n_classes, classes.size
        )
        return float("nan")
    return float(silhouette_score(embeddings, classes, metric="cosine"))


# A backbone whose embeddings sit this close together cannot rank anything: mean pairwise cosine of
# CLIP-style image embeddings of one modality is typically 0.3-0.9; above 0.99 every image looks the same
# (an untrained tower, or images preprocessed so that nothing of them is left).
COLLAPSED_MEAN_COSINE = 0.99


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """Return the mean cosine similarity over every pair of distinct rows of L2-normalised `vectors`.

    O(n·d): for unit rows the sum over all ordered pairs is |Σv|² − n, so no n×n matrix is formed.
    NaN for fewer than two rows.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    return cosine_from_sums(vectors.sum(axis=0), float((vectors**2).sum()), vectors.shape[0])


def cosine_from_sums(total: np.ndarray, squared_norms: float, n: int) -> float:
    """Mean pairwise cosine of `n` unit rows from their sum and the sum of their squared norms (streamable)."""
    if n < 2:
        return float("nan")
    total = np.asarray(total, dtype=np.float64)
    return float((total @ total - squared_norms) / (n * (n - 1)))


def is_collapsed(mean_cosine: float) -> bool:
    """Whether a mean pairwise cosine says the embeddings have collapsed to (nearly) one vector."""
    return bool(np.isfinite(mean_cosine) and mean_cosine >= COLLAPSED_MEAN_COSINE)


# --------------------------------------------------------------------------------------------------
# Multi-label ROC-AUC (X-TRA)
# --------------------------------------------------------------------------------------------------


def _auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """ROC-AUC by the Mann-Whitney rank formula (ties averaged); NaN unless both classes are present."""
    from scipy.stats import rankdata

    positives = int(targets.sum())
    negatives = targets.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[targets].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def both_classes(targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(L,) whether each label has both classes among the rows its mask keeps: where an AUC is defined."""
    keep, positive = mask > 0, targets > 0.5
    return np.array(
        [bool(positive[keep[:, j], j].any() and (~positive[keep[:, j], j]).any()) for j in range(targets.shape[1])],
        dtype=bool,
    )


def percentile_interval(distribution: np.ndarray) -> tuple[float | None, float | None]:
    """The 95% percentile interval of bootstrap values, NaN resamples left out; (None, None) if none is left."""
    values = distribution[~np.isnan(distribution)]
    if not values.size:
        return None, None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def multilabel_auc(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return (L,) per-label ROC-AUC over the rows each label's mask keeps; NaN for a label without both classes."""
    keep, positive = mask > 0, targets > 0.5
    return np.array([_auc(scores[keep[:, j], j], positive[keep[:, j], j]) for j in range(scores.shape[1])])


def bootstrap_multilabel_auc(
    scores: dict[str, np.ndarray], targets: np.ndarray, mask: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per method: (observed per-label AUC (L,), resampled per-label AUC (n_boot, L)).

    Every method is resampled with the same row indices (seeded), so differences between methods
    are paired. A label without both classes in a resample is NaN there; the macro AUC of a
    resample is the mean over the labels evaluable on the whole data (`np.nanmean`).
    """
    rng = np.random.default_rng(seed)
    n = targets.shape[0]
    draws = [rng.integers(0, n, size=n) for _ in range(n_boot)]
    result = {}
    for method, values in scores.items():
        resampled = np.array([multilabel_auc(values[rows], targets[rows], mask[rows]) for rows in draws])
        result[method] = (multilabel_auc(values, targets, mask), resampled.reshape(n_boot, targets.shape[1]))
    return result


def paired_difference(
    observed_a: float,
    observed_b: float,
    resampled_a: np.ndarray,
    resampled_b: np.ndarray,
    n_boot: int,
    level: float = 0.95,
) -> dict[str, float]:
    """{difference, ci_low, ci_high, p_value} of b − a from paired resamples, with `paired_bootstrap`'s conventions.

    Two-sided p: twice the fraction of resampled differences at or beyond zero against the
    observed sign, at least 1 / (n_boot + 1); differences within float tolerance are 0 (p = 1).
    """
    tolerance = PAIRED_ZERO_TOLERANCE * max(1.0, abs(observed_a), abs(observed_b))
    difference = observed_b - observed_a
    distribution = resampled_b - resampled_a
    distribution = distribution[~np.isnan(distribution)]
    difference = 0.0 if abs(difference) <= tolerance else difference
    distribution = np.where(np.abs(distribution) <= tolerance, 0.0, distribution)
    if not distribution.size:
        return {"difference": difference, "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan")}
    low, high = _percentile_interval(distribution, level)
    if difference > 0:
        p_value = 2.0 * float(np.mean(distribution <= 0))
    elif difference < 0:
        p_value = 2.0 * float(np.mean(distribution >= 0))
    else:
        p_value = 1.0
    return {
        "difference": difference,
        "ci_low": 0.0 if abs(low) <= tolerance else low,
        "ci_high": 0.0 if abs(high) <= tolerance else high,
        "p_value": min(1.0, max(p_value_floor(n_boot), p_value)),
    }
