"""mtcxr.xtra.ann: exact search against a NumPy reference, own-group exclusion, approximate recall, determinism."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mtcxr.xtra import ann


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of x scaled to unit length, as float32."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_unit(n: int, d: int, seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, d)))


def clustered_unit(n: int, centres: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """n unit vectors around random ones of `centres`: normalise(centre + noise * N(0, I/d))."""
    rng = np.random.default_rng(seed)
    d = centres.shape[1]
    return unit(centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal((n, d)) / np.sqrt(d))


def reference(entries: np.ndarray, queries: np.ndarray, k: int, query_groups=None, entry_groups=None):
    """Filter then take top-k in float64: the best k entries of another group, ties by id, padded."""
    scores = queries.astype(np.float64) @ entries.astype(np.float64).T
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for q in range(len(queries)):
        ids = np.arange(len(entries))
        if query_groups is not None:
            ids = ids[entry_groups != query_groups[q]]
        order = ids[np.lexsort((ids, -scores[q, ids]))][:k]
        out_ids[q, : len(order)] = order
        out_scores[q, : len(order)] = scores[q, order]
    return out_scores, out_ids


def assert_same(got, want) -> None:
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-5)
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64


@pytest.mark.parametrize("block_size", [7, 1024])
def test_exact_search_equals_numpy_argsort(block_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    entries, queries = random_unit(700, 32, 0), random_unit(60, 32, 1)
    # A score buffer of a few hundred entries per query makes the search merge several memory chunks.
    monkeypatch.setattr(ann, "SCORE_BUFFER_ELEMENTS", 300 * block_size)
    index = ann.make_index(entries, "flat")
    got = ann.search(index, queries, 10, block_size=block_size)
    assert_same(got, reference(entries, queries, 10))
    assert np.all(np.diff(got[0], axis=1) <= 0)  # best first


def test_exact_search_of_the_memory_itself_finds_each_entry_first() -> None:
    entries = random_unit(300, 16, 2)
    scores, ids = ann.search(ann.make_index(entries, "flat"), entries, 5, progress="self")
    np.testing.assert_array_equal(ids[:, 0], np.arange(300))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("buffer_columns", [None, 70, 7])  # one chunk; groups and a tail; tail only
def test_equal_scores_are_ordered_by_entry_id(buffer_columns: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small integers: every product is exact in float32, so duplicated entries tie exactly.
    base = np.random.default_rng(3).integers(-3, 4, size=(40, 8)).astype(np.float32)
    entries = np.concatenate([base, base, base, base])  # entry i ties with i + 40, i + 80 and i + 120
    if buffer_columns:
        monkeypatch.setattr(ann, "SCORE_BUFFER_ELEMENTS", buffer_columns * len(base))
    scores, ids = ann.search(ann.make_index(entries, "flat"), base, 10)
    want = reference(entries, base, 10)  # ties by ascending id, at the cut-off too
    np.testing.assert_array_equal(scores, want[0])
    np.testing.assert_array_equal(ids, want[1])
    assert (scores[:, 1:] == scores[:, :-1]).sum() >= 3 * 40  # each row holds at least one tied quadruple
    groups = np.arange(len(entries)) % 40  # an entry's copies share its group: excluded together
    got = ann.search_excluding(ann.make_index(entries, "flat"), base, 10, np.arange(40), groups)
    want = reference(entries, base, 10, np.arange(40), groups)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_search_takes_read_only_and_empty_queries_and_keeps_the_thread_count() -> None:
    import warnings

    import torch

    entries = random_unit(200, 16, 17)
    queries = random_unit(5, 16, 18)
    queries.setflags(write=False)
    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ann.search(ann.make_index(entries, "flat"), queries, 4)
    assert_same(got, reference(entries, queries, 4))
    assert torch.get_num_threads() == threads
    scores, ids = ann.search(ann.make_index(entries, "flat"), np.empty((0, 16), np.float32), 4)
    assert scores.shape == ids.shape == (0, 4)


def test_a_flat_index_read_back_from_disk_is_searched_the_same(tmp_path) -> None:
    import faiss

    entries, queries = random_unit(300, 16, 19), random_unit(20, 16, 20)
    faiss.write_index(ann.make_index(entries, "flat"), str(tmp_path / "images.faiss"))
    got = ann.search(faiss.read_index(str(tmp_path / "images.faiss")), queries, 5)
    assert_same(got, reference(entries, queries, 5))


def test_search_pads_when_the_memory_holds_fewer_than_k() -> None:
    entries, queries = random_unit(5, 8, 4), random_unit(3, 8, 5)
    scores, ids = ann.search(ann.make_index(entries, "flat"), queries, 8)
    want = reference(entries, queries, 8)
    assert_same((scores, ids), want)
    assert np.all(ids[:, 5:] == -1) and np.all(np.isneginf(scores[:, 5:]))


def groups_like_patients(n: int, seed: int) -> np.ndarray:
    """Group codes of n entries: sizes 1-6 mostly, one group of 40 (more than any k here)."""
    rng = np.random.default_rng(seed)
    sizes = [40] + list(rng.integers(1, 7, size=n))
    codes = np.repeat(np.arange(len(sizes)), sizes)[:n]
    return rng.permutation(codes).astype(np.int64)


@pytest.mark.parametrize("block_size", [9, 1024])
def test_search_excluding_equals_filter_then_top_k(block_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "SCORE_BUFFER_ELEMENTS", 250 * block_size)  # several memory chunks
    entries = random_unit(600, 24, 6)
    entry_groups = groups_like_patients(600, 7)
    # Queries: the memory itself (train images), plus 20 of a group the memory does not hold (test images).
    queries = np.concatenate([entries, random_unit(20, 24, 8)])
    query_groups = np.concatenate([entry_groups, np.full(20, 10_000)])
    index = ann.make_index(entries, "flat")
    got = ann.search_excluding(index, queries, 10, query_groups, entry_groups, block_size=block_size)
    assert_same(got, reference(entries, queries, 10, query_groups, entry_groups))
    assert not np.any(entry_groups[got[1]] == query_groups[:, None])
    big = query_groups == np.bincount(entry_groups).argmax()
    assert big.sum() == 40 and np.all(got[1][big] >= 0)  # a group larger than k still gets k neighbours


def test_search_excluding_pads_a_tiny_memory() -> None:
    entries = random_unit(6, 8, 9)
    entry_groups = np.array([0, 0, 0, 0, 1, 2], dtype=np.int64)
    queries, query_groups = entries, entry_groups
    scores, ids = ann.search_excluding(ann.make_index(entries, "flat"), queries, 5, query_groups, entry_groups)
    assert_same((scores, ids), reference(entries, queries, 5, query_groups, entry_groups))
    np.testing.assert_array_equal((ids >= 0).sum(axis=1), [2, 2, 2, 2, 5, 5])
    assert np.all(np.isneginf(scores[:4, 2:])) and np.all(ids[:4, 2:] == -1)


def test_search_excluding_checks_group_shapes() -> None:
    index = ann.make_index(random_unit(10, 4, 10), "flat")
    with pytest.raises(ValueError, match="entry_groups"):
        ann.search_excluding(index, random_unit(2, 4, 11), 3, np.zeros(2), np.zeros(9))
    with pytest.raises(ValueError, match="query_groups"):
        ann.search_excluding(index, random_unit(2, 4, 11), 3, np.zeros(3), np.zeros(10))


def test_own_group_sizes() -> None:
    sizes = ann.own_group_sizes(np.array([5, 1, 9, 2]), np.array([1, 2, 2, 5, 5, 5]))
    np.testing.assert_array_equal(sizes, [3, 1, 0, 2])


CENTRES = random_unit(200, 64, 11)
CLUSTERED = clustered_unit(20_000, CENTRES, 0.7, 12)
CLUSTERED_QUERIES = clustered_unit(500, CENTRES, 0.7, 13)  # other points around the same centres


def test_clustered_test_data_has_neighbour_structure() -> None:
    scores, _ = ann.search(ann.make_index(CLUSTERED, "flat"), CLUSTERED_QUERIES, 10)
    median = np.median(CLUSTERED_QUERIES[:50] @ CLUSTERED.T)
    assert scores[:, -1].mean() > median + 0.5  # the 10th neighbour is far closer than a typical entry


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_with_the_defaults(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mtcxr.xtra.ann"):
        index = ann.make_index(CLUSTERED, kind, seed=0)
    if kind == "ivf":  # 20,000 entries allow 512 lists, not the default 1024
        assert index.nlist == 20_000 // 39 and "index.nlist 1024 capped at 512" in caplog.text
    recall = ann.measure_recall(index, CLUSTERED, CLUSTERED_QUERIES, 10)
    assert recall >= 0.9
    exact = ann.search(ann.make_index(CLUSTERED, "flat"), CLUSTERED_QUERIES, 10)[1]
    assert recall == ann.recall_at_k(ann.search(index, CLUSTERED_QUERIES, 10)[1], exact, 10)


def test_approximate_search_excluding_never_returns_the_own_group() -> None:
    groups = np.random.default_rng(13).integers(0, 2_000, len(CLUSTERED))
    index = ann.make_index(CLUSTERED, "ivf", nlist=128, nprobe=8)
    _, ids = ann.search_excluding(index, CLUSTERED[:2_000], 10, groups[:2_000], groups)
    assert np.all(ids >= 0) and not np.any(groups[ids] == groups[:2_000, None])
    recall = ann.measure_recall(index, CLUSTERED, CLUSTERED[:500], 10, groups[:500], groups)
    assert recall >= 0.9


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_same_seed_builds_search_identically(kind: str) -> None:
    data = CLUSTERED[:6_000]
    settings = {"nlist": 64, "nprobe": 4, "hnsw_m": 16, "ef_construction": 40, "ef_search": 32, "seed": 5}
    first = ann.search(ann.make_index(data, kind, **settings), CLUSTERED_QUERIES, 10)
    second = ann.search(ann.make_index(data, kind, **settings), CLUSTERED_QUERIES, 10)
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(first[0], second[0])


def test_unknown_kind_names_the_config_key() -> None:
    with pytest.raises(ValueError, match=r"index\.kind must be one of flat, ivf, hnsw; got 'annoy'"):
        ann.make_index(random_unit(10, 4, 14), "annoy")


def test_search_rejects_bad_arguments() -> None:
    index = ann.make_index(random_unit(10, 4, 15), "flat")
    with pytest.raises(ValueError, match="k must be at least 1"):
        ann.search(index, random_unit(2, 4, 16), 0)
    with pytest.raises(ValueError, match="dimension 5, the index 4"):
        ann.search(index, random_unit(2, 5, 16), 3)


def test_recall_at_k() -> None:
    exact = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, -1, -1, -1]])
    approx = np.array([[3, 2, 9, 9], [4, 5, 6, 7], [8, -1, -1, -1]])
    # 2/4, 4/4, and 1/1 (a row with one real exact neighbour)
    assert ann.recall_at_k(approx, exact, 4) == pytest.approx((0.5 + 1 + 1) / 3)
    assert ann.recall_at_k(approx, exact, 2) == pytest.approx((0 + 1 + 1) / 3)
    assert ann.recall_at_k(np.full((1, 2), -1), np.full((1, 2), -1), 2) == 1.0


def test_sample_queries_is_seeded_and_sorted() -> None:
    a, b = ann.sample_queries(1_000, 50, seed=3), ann.sample_queries(1_000, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 50 and np.all(np.diff(a) > 0)
    assert len(ann.sample_queries(10, 50)) == 10
