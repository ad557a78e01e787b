"""Exact top-k search: `mtcxr.metrics.topk_search` against FAISS's flat index and the bare torch matmul.

    python benchmarks/exact_search.py [--queries 4096] [--keys 50000] [--dim 512] [--k 10] [--runs 4]

Each method answers the same top-k of L2-normalised random vectors; rates are queries per second, and
each run's ratio is against the bare matmul (`queries @ keys.T`, no top-k) of the same run. The results
are checked to agree (FAISS's ties aside: it orders equal scores its own way, mtcxr by key index).
Quote the machine and whether it was quiet: two cores shared with another job halve every rate.
"""

from __future__ import annotations

import argparse
import platform
import time

import faiss
import numpy as np
import torch

from mtcxr.metrics import topk_search


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=4096)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    keys = rng.standard_normal((args.keys, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(args.dim)
    index.add(keys)
    q_t, k_t = torch.from_numpy(queries), torch.from_numpy(keys)
    print(
        f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"{args.queries} queries x {args.keys} keys x {args.dim} dims, top {args.k}"
    )
    print(
        "| run | matmul q/s | topk_search q/s | FAISS flat q/s | topk_search / matmul | FAISS / matmul | topk_search / FAISS |"
    )
    print("|---|---|---|---|---|---|---|")
    for run in range(args.runs):
        with torch.inference_mode():
            bare, _ = timed(lambda: q_t @ k_t.T)
        ours, (scores, ids) = timed(lambda: topk_search(queries, keys, args.k))
        theirs, (f_scores, f_ids) = timed(lambda: index.search(queries, args.k))
        np.testing.assert_allclose(scores, f_scores, rtol=0, atol=1e-5)
        agree = (ids == f_ids).mean()
        assert agree > 0.999, f"only {agree:.4f} of the ids agree with FAISS"
        rate = lambda seconds: args.queries / seconds  # noqa: E731
        print(
            f"| {run + 1} | {rate(bare):,.0f} | {rate(ours):,.0f} | {rate(theirs):,.0f} | {bare / ours:.2f} | "
            f"{bare / theirs:.2f} | {theirs / ours:.2f} |"
        )


if __name__ == "__main__":
    main()
