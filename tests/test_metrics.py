"""Metrics on tiny hand-made inputs with known answers, and blocked search against brute force."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mtcxr.metrics import (
    average_precision_at_k,
    bootstrap_ci,
    cosine_silhouette,
    first_hit_ranks,
    is_collapsed,
    label_set_exact_match,
    label_set_jaccard,
    mean_pairwise_cosine,
    mean_rank,
    median_rank,
    p_value_floor,
    paired_bootstrap,
    precision_at_k,
    recall_at_k,
    roc_auc,
    topk_search,
)

# Three queries, four keys in 2-D: inner products are easy to read off.
# key 0 = (1, 0), key 1 = (0, 1), key 2 = (0.6, 0.8), key 3 = (-1, 0).
KEYS = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], dtype=np.float32)
# query 0 = (1, 0):  scores 1, 0, 0.6, -1   -> order 0, 2, 1, 3
# query 1 = (0, 1):  scores 0, 1, 0.8,  0   -> order 1, 2, 0, 3 (0 and 3 tie: lower index first)
# query 2 = (-1, 0): scores -1, 0, -0.6, 1  -> order 3, 1, 2, 0
QUERIES = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)


def brute_force_order(queries: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full ranking of every key per query by descending score, lower index first on ties."""
    scores = queries.astype(np.float32) @ keys.astype(np.float32).T
    order = np.lexsort((np.broadcast_to(np.arange(keys.shape[0]), scores.shape), -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=1), order


def tied_embeddings(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Small-integer vectors: their inner products are exact in float32, so many ties are real ties."""
    return rng.integers(-2, 3, size=(n, dim)).astype(np.float32)


# --- search ---------------------------------------------------------------------------------------


def test_topk_search_hand_made():
    scores, indices = topk_search(QUERIES, KEYS, k=3)
    np.testing.assert_array_equal(indices, [[0, 2, 1], [1, 2, 0], [3, 1, 2]])
    np.testing.assert_allclose(scores, [[1.0, 0.6, 0.0], [1.0, 0.8, 0.0], [1.0, 0.0, -0.6]], atol=1e-6)
    assert scores.dtype == np.float32 and indices.dtype == np.int64


@pytest.mark.parametrize("k", [1, 3, 7, 40, 100])
def test_topk_search_matches_brute_force_with_ties_and_k_above_n(k):
    rng = np.random.default_rng(1)
    queries, keys = tied_embeddings(rng, 23, 3), tied_embeddings(rng, 40, 3)
    expected_scores, expected_indices = brute_force_order(queries, keys)
    scores, indices = topk_search(queries, keys, k=k)
    k_eff = min(k, keys.shape[0])
    assert indices.shape == (23, k_eff)
    np.testing.assert_array_equal(indices, expected_indices[:, :k_eff])
    np.testing.assert_array_equal(scores, expected_scores[:, :k_eff])


def test_topk_search_blocked_equals_unblocked():
    rng = np.random.default_rng(2)
    queries, keys = tied_embeddings(rng, 11, 4), tied_embeddings(rng, 30, 4)
    whole = topk_search(queries, keys, k=5, block_size=4096)
    blocked = topk_search(queries, keys, k=5, block_size=2)
    np.testing.assert_array_equal(blocked[0], whole[0])
    np.testing.assert_array_equal(blocked[1], whole[1])


def test_search_in_one_buffer_reused_across_blocks():
    """Blocks of 80 queries x 9,000 keys go through one score buffer, each block written
    over the last (the last block shorter): ranks, top-k and ties as brute force has them."""
    rng = np.random.default_rng(5)
    queries, keys = tied_embeddings(rng, 200, 6), tied_embeddings(rng, 9000, 6)
    expected_scores, expected_order = brute_force_order(queries, keys)
    scores, indices = topk_search(queries, keys, k=12, block_size=80)
    np.testing.assert_array_equal(indices, expected_order[:, :12])
    np.testing.assert_array_equal(scores, expected_scores[:, :12])
    # Small-integer vectors over 9,000 keys: most queries' 12th score is shared by many keys.
    assert (expected_scores[:, 11] == expected_scores[:, 12]).mean() > 0.5
    targets = rng.integers(0, 9000, size=(200, 3))
    position = np.argsort(expected_order, axis=1)  # key -> 0-based rank, per query
    expected_ranks = 1 + np.take_along_axis(position, targets, axis=1).min(axis=1)
    np.testing.assert_array_equal(first_hit_ranks(queries, keys, targets, block_size=80), expected_ranks)


def test_topk_search_random_normalised():
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    keys = rng.normal(size=(200, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    _, expected = brute_force_order(queries, keys)
    _, indices = topk_search(queries, keys, k=10, block_size=7)
    np.testing.assert_array_equal(indices, expected[:, :10])


def test_search_rejects_bad_input():
    with pytest.raises(ValueError, match="dimension"):
        topk_search(QUERIES, KEYS[:, :1], k=1)
    with pytest.raises(ValueError, match="NaN"):
        topk_search(np.array([[np.nan, 0.0]], dtype=np.float32), KEYS, k=1)
    with pytest.raises(ValueError, match="k must be"):
        topk_search(QUERIES, KEYS, k=0)
    with pytest.raises(ValueError, match="no target"):
        first_hit_ranks(QUERIES, KEYS, [np.array([0]), np.array([], dtype=np.int64), np.array([1])])
    with pytest.raises(ValueError, match="must lie in"):
        first_hit_ranks(QUERIES, KEYS, np.array([0, 1, 4]))


# --- ranks ----------------------------------------------------------------------------------------


def test_first_hit_ranks_hand_made():
    # Query 0's hit is key 1 (rank 3); query 1's hits are keys 0 and 3, tied at 0: key 0 is the
    # better-ranked (rank 3); query 2's hits are keys 2 and 3, key 3 is its top score (rank 1).
    targets = [np.array([1]), np.array([3, 0]), np.array([2, 3])]
    ranks = first_hit_ranks(QUERIES, KEYS, targets)
    np.testing.assert_array_equal(ranks, [3, 3, 1])
    assert ranks.dtype == np.int64
    # One target per query as a plain 1-D array; key 3 for query 1 sits behind its tie with key 0.
    np.testing.assert_array_equal(first_hit_ranks(QUERIES, KEYS, np.array([0, 3, 0])), [1, 4, 4])
    np.testing.assert_array_equal(recall_at_k(ranks, 1), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(recall_at_k(ranks, 3), [1.0, 1.0, 1.0])
    assert median_rank(ranks) == 3.0
    assert mean_rank(ranks) == pytest.approx(7 / 3)


def test_first_hit_ranks_match_brute_force_and_topk():
    rng = np.random.default_rng(4)
    queries, keys = tied_embeddings(rng, 31, 3), tied_embeddings(rng, 25, 3)
    targets = [rng.choice(25, size=rng.integers(1, 5), replace=False) for _ in range(31)]
    _, order = brute_force_order(queries, keys)
    position = np.argsort(order, axis=1) + 1  # 1-based rank of every key
    expected = np.array([position[i, t].min() for i, t in enumerate(targets)])
    np.testing.assert_array_equal(first_hit_ranks(queries, keys, targets, block_size=4), expected)
    np.testing.assert_array_equal(first_hit_ranks(queries, keys, targets), expected)
    # Agreement with topk_search: the first hit in the full top-N list sits at that rank.
    _, indices = topk_search(queries, keys, k=25, block_size=3)
    from_topk = np.array([np.flatnonzero(np.isin(indices[i], t))[0] + 1 for i, t in enumerate(targets)])
    np.testing.assert_array_equal(from_topk, expected)


# --- clinical relevance ---------------------------------------------------------------------------

RELEVANT = np.array(
    [
        [1, 0, 1, 0],  # P@2 = 1/2; AP@4 = (1/1 + 2/3) / 2 = 5/6
        [0, 1, 1, 1],  # P@2 = 1/2; AP@4 = (1/2 + 2/3 + 3/4) / 3 = 23/36
        [0, 0, 0, 0],  # no relevant: P = 0, AP = 0
    ],
    dtype=bool,
)


def test_precision_at_k_by_hand():
    np.testing.assert_allclose(precision_at_k(RELEVANT, 1), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(precision_at_k(RELEVANT, 2), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(precision_at_k(RELEVANT, 4), [0.5, 0.75, 0.0])
    # k above the number retrieved: over the 4 retrieved.
    np.testing.assert_allclose(precision_at_k(RELEVANT, 10), [0.5, 0.75, 0.0])


def test_average_precision_at_k_by_hand():
    np.testing.assert_allclose(average_precision_at_k(RELEVANT, 4), [5 / 6, 23 / 36, 0.0])
    # Top 2: row 0 has one hit at rank 1 -> 1; row 1 has one hit at rank 2 -> 1/2.
    np.testing.assert_allclose(average_precision_at_k(RELEVANT, 2), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(average_precision_at_k(RELEVANT, 1), [1.0, 0.0, 0.0])


def test_class_balanced_mean():
    """With groups, the bootstrap's value is the mean over classes of the per-class mean."""
    values = np.array([1.0, 1.0, 1.0, 0.0])
    classes = np.array([0, 0, 0, 1])
    assert bootstrap_ci(values, 50, 0, groups=classes)[0] == pytest.approx(0.5)  # plain mean would be 0.75
    assert bootstrap_ci(np.array([0.2, 0.4]), 50, 0, groups=np.array(["normal", "normal"]))[0] == pytest.approx(0.3)


def test_label_set_metrics_by_hand():
    query = np.array([[1, 0, 1], [0, 0, 0]], dtype=bool)
    retrieved = np.array(
        [
            [[1, 0, 1], [1, 0, 0], [0, 1, 0]],  # exact, Jaccard 1/2, Jaccard 0
            [[0, 0, 0], [0, 1, 0], [0, 0, 0]],  # both empty (Jaccard 1), Jaccard 0, both empty
        ],
        dtype=bool,
    )
    np.testing.assert_allclose(label_set_exact_match(query, retrieved, 3), [1 / 3, 2 / 3])
    np.testing.assert_allclose(label_set_exact_match(query, retrieved, 1), [1.0, 1.0])
    np.testing.assert_allclose(label_set_jaccard(query, retrieved, 3), [1.5 / 3, 2 / 3])
    np.testing.assert_allclose(label_set_jaccard(query, retrieved, 2), [0.75, 0.5])


# --- bootstrap ------------------------------------------------------------------------------------


def test_bootstrap_ci_contains_mean_is_seeded_and_narrows():
    rng = np.random.default_rng(5)
    small = rng.binomial(1, 0.3, size=100).astype(float)
    large = rng.binomial(1, 0.3, size=10_000).astype(float)
    value, low, high = bootstrap_ci(small, n_boot=500, seed=7)
    assert value == pytest.approx(small.mean())
    assert low < value < high
    assert bootstrap_ci(small, n_boot=500, seed=7) == (value, low, high)
    assert bootstrap_ci(small, n_boot=500, seed=8) != (value, low, high)
    _, large_low, large_high = bootstrap_ci(large, n_boot=500, seed=7)
    assert large_high - large_low < (high - low) / 5  # ~sqrt(100) narrower
    # Standard error of a proportion: the 95% interval is about ±1.96·sqrt(p(1−p)/n).
    assert (high - low) / 2 == pytest.approx(1.96 * np.sqrt(value * (1 - value) / small.size), rel=0.25)


def test_bootstrap_ci_grouped_is_class_balanced_and_stratified():
    values = np.concatenate([np.ones(90), np.zeros(10)])
    groups = np.concatenate([np.zeros(90), np.ones(10)])
    value, low, high = bootstrap_ci(values, n_boot=200, seed=0, groups=groups)
    # Each class is constant and always present, so every resample's balanced mean is exactly 0.5.
    assert (value, low, high) == (0.5, 0.5, 0.5)


def test_bootstrap_ci_median_statistic():
    values = np.arange(101, dtype=float)
    value, low, high = bootstrap_ci(values, n_boot=300, seed=0, statistic=np.median)
    assert value == 50.0
    assert low < 50.0 < high


def test_bootstrap_ci_chunks_large_inputs(monkeypatch):
    # Force many small chunks; the result must still be a proper interval around the mean.
    monkeypatch.setattr("mtcxr.metrics._BOOTSTRAP_CHUNK_ELEMENTS", 1000)
    values = np.random.default_rng(6).normal(size=400)
    value, low, high = bootstrap_ci(values, n_boot=100, seed=0)
    assert low < value < high


def test_paired_bootstrap():
    rng = np.random.default_rng(9)
    a = rng.binomial(1, 0.4, size=500).astype(float)
    b = np.maximum(a, rng.binomial(1, 0.5, size=500))  # b is a plus extra hits
    better = paired_bootstrap(a, b, n_boot=1000, seed=0)
    assert better["difference"] == pytest.approx(b.mean() - a.mean())
    assert better["difference"] > 0
    assert 0 < better["ci_low"] < better["difference"] < better["ci_high"]
    assert better["p_value"] < 0.01
    same = paired_bootstrap(a, a.copy(), n_boot=1000, seed=0)
    assert same == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}
    # An independent draw with the same hit rate: no significant difference.
    noise = paired_bootstrap(a, rng.binomial(1, 0.4, size=500).astype(float), n_boot=1000, seed=0)
    assert noise["p_value"] > 0.2
    assert noise["ci_low"] < 0 < noise["ci_high"]
    worse = paired_bootstrap(b, a, n_boot=1000, seed=0)
    assert worse["difference"] == pytest.approx(-better["difference"])
    assert worse["p_value"] < 0.01
    grouped = paired_bootstrap(a, b, n_boot=200, seed=0, groups=np.arange(500) % 2)
    halves = np.arange(500) % 2
    assert grouped["difference"] == pytest.approx(np.mean([(b - a)[halves == g].mean() for g in (0, 1)]))


def test_paired_bootstrap_treats_float_noise_as_zero():
    # 0.1 + 0.2 is 0.30000000000000004: a difference of -5.6e-17 that used to print "-0.000 [...] p=0".
    noise = {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}
    assert paired_bootstrap(np.full(40, 0.1 + 0.2), np.full(40, 0.3), n_boot=1000, seed=0) == noise
    groups = np.arange(40) % 2
    assert paired_bootstrap(np.full(40, 0.1 + 0.2), np.full(40, 0.3), n_boot=200, seed=0, groups=groups) == noise
    # The tolerance scales with the values: one ulp of a rank of 5000 is 9.1e-13.
    ranks = np.full(40, 5000.0)
    assert paired_bootstrap(ranks, np.nextafter(ranks, np.inf), n_boot=1000, seed=0) == noise
    # -0.0 is 0.0 too: it would print as "-0.000".
    assert str(paired_bootstrap(np.zeros(5), -np.zeros(5), n_boot=10)["difference"]) == "0.0"
    # A real difference of one hit in 1000 queries is kept.
    one_hit = paired_bootstrap(np.zeros(1000), (np.arange(1000) < 1).astype(float), n_boot=1000, seed=0)
    assert one_hit == {"difference": 0.001, "ci_low": 0.0, "ci_high": 0.003, "p_value": 0.734}


def test_paired_bootstrap_p_value_is_at_least_the_resolution():
    assert p_value_floor(1000) == 1 / 1001
    always = {"difference": 1.0, "ci_low": 1.0, "ci_high": 1.0, "p_value": 1 / 1001}
    assert paired_bootstrap(np.zeros(50), np.ones(50), n_boot=1000, seed=0) == always
    assert paired_bootstrap(np.ones(50), np.zeros(50), n_boot=200, seed=0) == {
        "difference": -1.0,
        "ci_low": -1.0,
        "ci_high": -1.0,
        "p_value": 1 / 201,
    }
    # Above the floor p is twice the fraction of resamples at or across zero, exactly.
    assert paired_bootstrap(np.zeros(40), (np.arange(40) < 3).astype(float), n_boot=1000, seed=0) == {
        "difference": 0.075,
        "ci_low": 0.0,
        "ci_high": 0.175,
        "p_value": 0.07,
    }


# --- normal / abnormal separation -----------------------------------------------------------------


def test_roc_auc(caplog):
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    with caplog.at_level(logging.WARNING, logger="mtcxr.metrics"):
        assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert "only one class" in caplog.text


def test_cosine_silhouette_separated_clusters():
    rng = np.random.default_rng(10)
    normal = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.normal(size=(60, 3))
    abnormal = np.array([0.0, 1.0, 0.0]) + 0.05 * rng.normal(size=(40, 3))
    embeddings = np.vstack([normal, abnormal])
    classes = np.array([0] * 60 + [1] * 40)
    score = cosine_silhouette(embeddings, classes)
    assert score > 0.8
    # Subsampled: deterministic for a seed and still clearly separated.
    sub = cosine_silhouette(embeddings, classes, max_samples=30, seed=1)
    assert sub == cosine_silhouette(embeddings, classes, max_samples=30, seed=1)
    assert sub > 0.8
    mixed = cosine_silhouette(embeddings, rng.permutation(classes))
    assert abs(mixed) < 0.1


def test_cosine_silhouette_one_class_is_nan(caplog):
    with caplog.at_level(logging.WARNING, logger="mtcxr.metrics"):
        assert np.isnan(cosine_silhouette(np.eye(3), np.zeros(3)))


def test_seed_query_bootstrap_holds_seed_and_query_variance():
    from mtcxr.metrics import seed_query_bootstrap, seed_query_ci

    # Seeds differ, queries within a seed do not: all the spread is between seeds.
    by_seed = np.repeat(np.array([[0.2], [0.4], [0.9]]), 50, axis=1)
    observed, resampled = seed_query_bootstrap(by_seed, n_boot=2000, seed=0)
    assert observed == pytest.approx(0.5)
    # Every resample is a mean of three drawn seed levels: within [0.2, 0.9], and on a grid of 1/3 steps.
    assert resampled.min() >= 0.2 - 1e-12 and resampled.max() <= 0.9 + 1e-12
    assert resampled.std() > 0.1
    # One seed: only the queries vary, and the spread is the query bootstrap's.
    one = np.random.default_rng(0).random((1, 400))
    value, low, high = seed_query_ci(one, n_boot=2000, seed=0)
    se = one.std() / np.sqrt(400)
    assert value == pytest.approx(one.mean())
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    # Same seed, same answer.
    assert np.array_equal(seed_query_bootstrap(by_seed, 100, 3)[1], seed_query_bootstrap(by_seed, 100, 3)[1])


def test_seed_query_bootstrap_balances_groups():
    from mtcxr.metrics import seed_query_bootstrap

    values = np.array([[1.0] * 10 + [0.0] * 90, [1.0] * 10 + [0.0] * 90])
    groups = np.array([True] * 10 + [False] * 90)
    observed, resampled = seed_query_bootstrap(values, 200, 0, groups=groups)
    assert observed == pytest.approx(0.5)  # (1 + 0) / 2, not 0.1
    assert np.allclose(resampled, 0.5)  # each group is constant


def test_paired_bootstrap_seeds_constant_shift_and_sign():
    from mtcxr.metrics import paired_bootstrap_seeds

    rng = np.random.default_rng(0)
    baseline = rng.random(300)
    shifted = np.stack([baseline + 0.1, baseline + 0.1, baseline + 0.1])
    test = paired_bootstrap_seeds(baseline, shifted, n_boot=500, seed=0)
    assert test["difference"] == pytest.approx(0.1)
    assert test["ci_low"] == pytest.approx(0.1) and test["ci_high"] == pytest.approx(0.1)
    assert test["p_value"] == pytest.approx(1 / 501)
    # Seeds that disagree in sign: the pooled difference is not significant.
    mixed = np.stack([baseline + 0.1, baseline - 0.1, baseline + 0.02])
    test = paired_bootstrap_seeds(baseline, mixed, n_boot=500, seed=0)
    assert test["difference"] == pytest.approx(0.02 / 3)
    assert test["ci_low"] < 0 < test["ci_high"] and test["p_value"] > 0.2
    with pytest.raises(ValueError, match="expected baseline"):
        paired_bootstrap_seeds(baseline, baseline, n_boot=10)


def test_mean_pairwise_cosine_matches_the_pairwise_mean_and_flags_collapse():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(50, 16))
    spread /= np.linalg.norm(spread, axis=1, keepdims=True)
    gram = spread @ spread.T
    brute = gram[~np.eye(50, dtype=bool)].mean()
    assert mean_pairwise_cosine(spread) == pytest.approx(brute, abs=1e-12)
    assert not is_collapsed(mean_pairwise_cosine(spread))
    # One direction plus noise of 1e-3: what the tiny study's untrained demo tower gave (cosine 1.0000).
    collapsed = np.ones((50, 16)) + 1e-3 * rng.normal(size=(50, 16))
    collapsed /= np.linalg.norm(collapsed, axis=1, keepdims=True)
    assert mean_pairwise_cosine(collapsed) > 0.999 and is_collapsed(mean_pairwise_cosine(collapsed))
    # Two antipodal clusters are spread (cosine near 0), not collapsed.
    assert mean_pairwise_cosine(np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1 / 3)
    assert np.isnan(mean_pairwise_cosine(np.ones((1, 4))))


def test_the_group_prefilter_finds_tops_in_one_group_and_in_the_last_columns():
    """5,000 keys: 78 groups of 64 and 8 columns after them. Each query's best keys are planted together
    in one group (several top scores in one group) and among the last 8 columns (in no group)."""
    rng = np.random.default_rng(7)
    keys = rng.normal(size=(5000, 32)).astype(np.float32)
    queries = rng.normal(size=(30, 32)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for i, query in enumerate(queries[:2]):  # the last 8 columns: 4 each
        planted = [64 * (i + 3) + j for j in range(6)] + [4992 + 4 * i + j for j in range(4)]
        keys[planted] = query + rng.normal(scale=0.01, size=(len(planted), 32)).astype(np.float32)
    expected_scores, expected_order = brute_force_order(queries, keys)
    scores, indices = topk_search(queries, keys, k=10)
    np.testing.assert_array_equal(indices, expected_order[:, :10])
    np.testing.assert_allclose(scores, expected_scores[:, :10], atol=1e-6)
    assert set(indices[0].tolist()) == {192, 193, 194, 195, 196, 197, 4992, 4993, 4994, 4995}
    assert set(indices[1].tolist()) == {256, 257, 258, 259, 260, 261, 4996, 4997, 4998, 4999}
