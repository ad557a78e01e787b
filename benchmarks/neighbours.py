"""Nearest-neighbour search over a MIMIC-sized X-TRA memory (`mtcxr.xtra.ann`): exact, IVF and HNSW.

The memory holds 240,000 image vectors and 220,000 report vectors (D = 512, unit length) of 65,000
patients; the queries are the 240,000 image vectors themselves, each searched image->image and
image->report with its own patient excluded (`ann.search_excluding`), k = 16. Three kinds of data:

- uniform: every image and report vector is an independent uniform random unit vector
  (normalise(N(0, I))). No neighbour structure at all: the pessimistic case.
- clustered: 2,000 uniform random unit centres; each patient gets one centre c (uniformly) and a
  patient offset u ~ N(0, I/D); each of its images and reports is normalise(c + 0.6 u + 1.2 e) with
  its own e ~ N(0, I/D). Expected cosines: same patient 0.49, same centre 0.36, unrelated 0 ± 0.044,
  so a query's nearest neighbours (own patient excluded) are far closer than a typical entry.
  Discrete, well separated clusters: the easy case for IVF.
- lowrank: no clusters, a continuous 32-dimensional structure: each patient has z ~ N(0, I_32),
  each of its images and reports is normalise((z + 0.5 ε) W + 0.5 e) with ε ~ N(0, I_32),
  e ~ N(0, I_512) and one fixed W (32 x 512) with N(0, 1/32) entries.

Patients: each has 1 + Multinomial(240,000 - 65,000, p ∝ LogNormal(0, 1.2)) images (mean 3.7, a long
tail of patients with a hundred or more), images in random order; each of the 220,000 reports belongs
to the patient of a distinct random image.

Measured: the bare float32 matmul rate on this CPU and exact search's rate relative to it (alternating
the two, 7 rounds, so that both meet the same load from other jobs); for exact
search, IVF (index.nlist 1024) and HNSW (index.hnsw_m 32, index.ef_construction 80) the build time
(in full, both memories) and the search time, extrapolated linearly from a sample of queries (search
cost is linear in the number of queries: each query is searched independently); recall@16 of the
approximate indexes against exact search on 1,000 queries, over a sweep of nprobe / ef_search that
stops at the first setting reaching recall@16 >= 0.95 for both searches (or once a setting is slower
than exact search). The projected stage time is both builds + both searches over all queries.

Usage: .venv/bin/python benchmarks/neighbours.py [--scale 1.0] [--data uniform clustered]
       [--exact-queries 20000] [--approx-queries 4000] [--recall-sample 1000]
       [--nprobe 1 2 4 8 16 32 64 128 256] [--ef-search 16 32 64 128 256 512 1024] [--ratio-rounds 7]
(about 30 minutes at full scale on an otherwise idle 2-core VM; --scale 0.05 is a one-minute smoke run).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass, field

import faiss
import numpy as np
import torch

from mtcxr.xtra import ann

D, K = 512, 16
IMAGES, REPORTS, PATIENTS, CENTRES = 240_000, 220_000, 65_000, 2_000
PATIENT_SPREAD, ITEM_SPREAD = 0.6, 1.2
LATENT, LATENT_SPREAD, LOWRANK_NOISE = 32, 0.5, 0.5
DATA = ("uniform", "clustered", "lowrank")
TARGET_RECALL, TARGET_MINUTES = 0.95, 15.0
START = time.perf_counter()


def note(message: str) -> None:
    """Progress on stderr, with the time since the start."""
    print(f"[{time.perf_counter() - START:7.1f} s] {message}", file=sys.stderr, flush=True)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of x scaled to unit length (in place), float32."""
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@dataclass
class Memory:
    """One synthetic memory: vectors and patient codes of the images (also the queries) and reports."""

    name: str
    images: np.ndarray
    reports: np.ndarray
    image_groups: np.ndarray
    report_groups: np.ndarray


def make_groups(
    n_images: int, n_reports: int, n_patients: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Patient codes of the images (heavy-tailed, mean n_images / n_patients) and of the reports."""
    weights = rng.lognormal(0.0, 1.2, n_patients)
    counts = 1 + rng.multinomial(n_images - n_patients, weights / weights.sum())
    image_groups = rng.permutation(np.repeat(np.arange(n_patients, dtype=np.int64), counts))
    report_groups = image_groups[rng.choice(n_images, size=n_reports, replace=False)]
    return image_groups, report_groups


def make_memory(name: str, scale: float, seed: int = 0) -> Memory:
    """The `uniform`, `clustered` or `lowrank` memory (see the module docstring) at `scale` times MIMIC's size."""
    rng = np.random.default_rng(seed)
    n_images, n_reports, n_patients = (max(1, round(n * scale)) for n in (IMAGES, REPORTS, PATIENTS))
    image_groups, report_groups = make_groups(n_images, n_reports, n_patients, rng)

    def draw(groups: np.ndarray) -> np.ndarray:
        x = rng.standard_normal((len(groups), D), dtype=np.float32)
        if name == "uniform":
            return unit(x)
        if name == "lowrank":
            x *= LOWRANK_NOISE
            for rows in np.array_split(np.arange(len(groups)), 16):  # (n x 32) latents, a part at a time
                latent = latent_of[groups[rows]] + LATENT_SPREAD * rng.standard_normal(
                    (len(rows), LATENT), dtype=np.float32
                )
                x[rows] += latent @ mixing
            return unit(x)
        x *= ITEM_SPREAD / np.sqrt(D)
        x += centres[centre_of[groups]]
        x += offsets[groups]
        return unit(x)

    if name == "lowrank":
        mixing = rng.standard_normal((LATENT, D), dtype=np.float32) / np.sqrt(LATENT)
        latent_of = rng.standard_normal((n_patients, LATENT), dtype=np.float32)
    elif name == "clustered":
        n_centres = max(1, round(CENTRES * scale))
        centres = unit(rng.standard_normal((n_centres, D), dtype=np.float32))
        centre_of = rng.integers(0, n_centres, n_patients)
        offsets = rng.standard_normal((n_patients, D), dtype=np.float32) * (PATIENT_SPREAD / np.sqrt(D))
    elif name != "uniform":
        raise ValueError(f"unknown data {name!r}; one of {', '.join(DATA)}")
    return Memory(name, draw(image_groups), draw(report_groups), image_groups, report_groups)


def gemm_rate(b: int, n: int, library: str, repeats: int = 5) -> float:
    """GFLOP/s of a float32 (b x 512) @ (512 x n) product into a preallocated output (median of repeats)."""
    rng = np.random.default_rng(1)
    a, m = rng.standard_normal((b, D), dtype=np.float32), rng.standard_normal((n, D), dtype=np.float32)
    if library == "torch":
        ta, tm, out = torch.from_numpy(a), torch.from_numpy(m), torch.empty(b, n)
        run = lambda: torch.matmul(ta, tm.T, out=out)  # noqa: E731
    else:
        out = np.empty((b, n), np.float32)
        run = lambda: np.matmul(a, m.T, out=out)  # noqa: E731
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 2 * b * n * D / float(np.median(times)) / 1e9


def exact_vs_bare(rounds: int, n_queries: int, scale: float) -> list[tuple[float, float]]:
    """(exact search GFLOP/s, bare matmul GFLOP/s) pairs, measured alternately so that both meet the same load.

    Exact search: `search_excluding` of n_queries uniform image queries against a uniform image memory
    of 240,000 x scale entries. Bare: the (1024 x 512) @ (512 x 8,192) matmul of its blocks, alone.
    """
    memory = make_memory("uniform", scale, seed=3)
    index = ann.make_index(memory.images, "flat")
    queries = np.random.default_rng(4).permutation(len(memory.images))[:n_queries]
    pairs = []
    for _ in range(rounds):
        bare = gemm_rate(1024, ann.SCORE_BUFFER_ELEMENTS // 1024, "torch")
        clock, _, _ = timed_search(index, memory, queries, "i2i")
        pairs.append((2 * len(queries) * len(memory.images) * D / clock.wall / 1e9, bare))
    return pairs


@dataclass
class Result:
    """One method's figures on one memory; times for all queries are extrapolated from the sample."""

    data: str
    method: str
    setting: str
    build_s: float
    search_s: dict = field(default_factory=dict)  # i2i / i2r: seconds for all queries
    recall: dict = field(default_factory=dict)  # i2i / i2r: recall@16 on the recall sample
    cores: list = field(default_factory=list)  # CPU / wall of each timed build and search

    @property
    def total_min(self) -> float:
        return (self.build_s + sum(self.search_s.values())) / 60

    @property
    def min_recall(self) -> float:
        return min(self.recall.values()) if self.recall else 1.0


class Clock:
    """Wall and CPU seconds of a block: CPU / wall is how many cores the process got (2 when alone)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def timed_search(
    index: faiss.Index, memory: Memory, queries: np.ndarray, target: str
) -> tuple[Clock, np.ndarray, np.ndarray]:
    """(clock, scores, ids) of search_excluding of the sampled image queries against `target`."""
    groups = memory.image_groups if target == "i2i" else memory.report_groups
    with Clock() as clock:
        scores, ids = ann.search_excluding(index, memory.images[queries], K, memory.image_groups[queries], groups)
    return clock, scores, ids


def run_memory(memory: Memory, args: argparse.Namespace, bare: float) -> tuple[list[Result], dict]:
    """All measurements on one memory: exact, then IVF and HNSW sweeps."""
    n_queries = len(memory.images)
    rng = np.random.default_rng(2)
    sample = rng.permutation(n_queries)[: min(args.exact_queries, n_queries)]
    approx_sample = sample[: min(args.approx_queries, len(sample))]
    recall_rows = slice(0, min(args.recall_sample, len(approx_sample)))
    scale_up = lambda seconds, q: seconds * n_queries / q  # noqa: E731
    targets = {"i2i": memory.images, "i2r": memory.reports}
    sizes = {"i2i": np.bincount(memory.image_groups), "i2r": np.bincount(memory.report_groups)}
    info = {
        "queries": n_queries,
        "patients": int((sizes["i2i"] > 0).sum()),
        "largest patient (images, reports)": (int(sizes["i2i"].max()), int(sizes["i2r"].max())),
    }

    # Exact search: flat index, searched with torch matmul + top-k. The bare matmul is timed just
    # before and after each search at the search's own block shape, so both meet the same load.
    exact = Result(memory.name, "exact (flat)", "-", 0.0)
    exact_ids, ratios = {}, []
    for target, vectors in targets.items():
        with Clock() as clock:
            index = ann.make_index(vectors, "flat")
        exact.build_s += clock.wall
        before = gemm_rate(1024, ann.SCORE_BUFFER_ELEMENTS // 1024, "torch")
        clock, scores, ids = timed_search(index, memory, sample, target)
        after = gemm_rate(1024, ann.SCORE_BUFFER_ELEMENTS // 1024, "torch")
        rate = 2 * len(sample) * len(vectors) * D / clock.wall / 1e9
        ratios.append((target, round(rate, 1), round((before + after) / 2, 1), round(2 * rate / (before + after), 2)))
        exact.search_s[target], exact.cores = scale_up(clock.wall, len(sample)), exact.cores + [clock.cpu / clock.wall]
        exact_ids[target] = ids
        if target == "i2i":
            pairs = memory.images[sample[:200]] @ memory.images[rng.choice(n_queries, 2_000, replace=False)].T
            info["median cosine (random pairs)"] = round(float(np.median(pairs)), 3)
            info["mean cosine of 1st / 16th neighbour (i2i)"] = (
                round(float(scores[:, 0].mean()), 3),
                round(float(scores[:, -1].mean()), 3),
            )
        if target == "i2i" and args.faiss_flat:
            q = min(args.faiss_flat, len(sample))
            with Clock() as clock:
                index.search(memory.images[sample[:q]], K)
            info["FAISS's own IndexFlatIP.search, GFLOP/s"] = round(2 * q * len(vectors) * D / clock.wall / 1e9, 1)
        del index
        note(f"{memory.name}: exact {target} {exact.search_s[target]:.0f} s for all queries, {ratios[-1]}")
    info["exact search (target, GFLOP/s, bare matmul around it, ratio)"] = ratios
    results = [exact]
    exact_search_s = sum(exact.search_s.values())

    for kind, values, knob in (("ivf", args.nprobe, "nprobe"), ("hnsw", args.ef_search, "ef_search")):
        indexes, build_s = {}, 0.0
        build_cores = []
        for target, vectors in targets.items():
            with Clock() as clock:
                indexes[target] = ann.make_index(
                    vectors, kind, nlist=args.nlist, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, seed=0
                )
            build_s, build_cores = build_s + clock.wall, build_cores + [clock.cpu / clock.wall]
            note(f"{memory.name}: {kind} {target} built in {clock.wall:.0f} s ({clock.cpu / clock.wall:.2f} cores)")
        for value in values:
            result = Result(memory.name, kind, f"{knob} {value}", build_s, cores=list(build_cores))
            for target, index in indexes.items():
                if kind == "ivf":
                    index.nprobe = value
                else:
                    index.hnsw.efSearch = value
                clock, _, ids = timed_search(index, memory, approx_sample, target)
                result.search_s[target] = scale_up(clock.wall, len(approx_sample))
                result.cores.append(clock.cpu / clock.wall)
                result.recall[target] = ann.recall_at_k(ids[recall_rows], exact_ids[target][recall_rows], K)
            results.append(result)
            note(
                f"{memory.name}: {kind} {knob} {value}: recall {result.recall}, search "
                f"{sum(result.search_s.values()):.0f} s"
            )
            if result.min_recall >= TARGET_RECALL or sum(result.search_s.values()) > exact_search_s:
                break  # the fastest setting reaching the target, or slower than exact search already
        del indexes
    return results, info


def table(results: list[Result]) -> str:
    """The results as a markdown table."""
    lines = [
        "| data | method | setting | build, both (s) | search i2i + i2r, all queries (s) | recall@16 i2i / i2r "
        "| stage total (min) | ≤ 15 min and recall ≥ 0.95 | cores got |",
        "|---|---|---|---:|---:|---|---:|---|---:|",
    ]
    for r in results:
        recall = " / ".join(f"{r.recall[t]:.3f}" for t in ("i2i", "i2r")) if r.recall else "1 (exact)"
        ok = r.total_min <= TARGET_MINUTES and r.min_recall >= TARGET_RECALL
        lines.append(
            f"| {r.data} | {r.method} | {r.setting} | {r.build_s:,.0f} | "
            f"{r.search_s['i2i']:,.0f} + {r.search_s['i2r']:,.0f} | {recall} | {r.total_min:.1f} | "
            f"{'yes' if ok else 'no'} | {min(r.cores):.1f}–{max(r.cores):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of MIMIC's size")
    parser.add_argument("--data", nargs="*", default=list(DATA), choices=DATA, help="none: the matmul figures only")
    parser.add_argument("--exact-queries", type=int, default=20_000, help="queries exact search is timed on")
    parser.add_argument(
        "--approx-queries", type=int, default=4_000, help="queries each approximate setting is timed on"
    )
    parser.add_argument("--recall-sample", type=int, default=1_000, help="queries recall@16 is measured on")
    parser.add_argument(
        "--faiss-flat", type=int, default=1_000, help="queries FAISS's own flat search is timed on (0: skip)"
    )
    parser.add_argument("--ratio-rounds", type=int, default=7, help="rounds of exact search vs bare matmul (0: skip)")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024])
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, {faiss.omp_get_max_threads()} "
        f"FAISS threads; Python {platform.python_version()}, faiss {faiss.__version__}, torch {torch.__version__}, "
        f"numpy {np.__version__}"
    )
    n = max(1, round(IMAGES * args.scale))
    with Clock() as clock:
        gemm_rate(1024, 16_384, "torch", repeats=20)
    print(f"cores this process got for a 2-thread matmul: {clock.cpu / clock.wall:.2f} (2.0 when the machine is idle)")
    rates = {
        f"{lib} ({b} x 512) @ (512 x {m:,})": gemm_rate(b, m, lib)
        for lib in ("torch", "numpy")
        for b, m in ((1024, ann.SCORE_BUFFER_ELEMENTS // 1024), (1024, n))
    }
    bare = max(rates.values())
    print("\nbare float32 matmul, GFLOP/s:")
    for name, rate in rates.items():
        print(f"  {name}: {rate:.1f}")
    note(f"bare matmul {bare:.1f} GFLOP/s")

    if args.ratio_rounds:
        pairs = exact_vs_bare(args.ratio_rounds, 4_096, args.scale)
        ratios = [search / bare for search, bare in pairs]
        print(
            f"\nexact search vs bare matmul, alternately ({args.ratio_rounds} rounds of 4,096 queries against "
            f"{round(IMAGES * args.scale):,} entries, then the bare matmul): "
            + ", ".join(f"{search:.0f}/{bare:.0f}" for search, bare in pairs)
            + f" GFLOP/s; ratio median {np.median(ratios):.2f} (range {min(ratios):.2f}–{max(ratios):.2f})"
        )
        note("exact vs bare measured")

    results = []
    for name in args.data:
        memory = make_memory(name, args.scale)
        note(f"{name}: memory generated")
        found, info = run_memory(memory, args, bare)
        results += found
        print(f"\n{name}:")
        for key, value in info.items():
            print(f"  {key}: {value}")
        del memory

    print("\n" + table(results))
    print(
        f"\nbare matmul {bare:.1f} GFLOP/s; searches timed on {args.exact_queries:,} (exact) and "
        f"{args.approx_queries:,} (approximate) queries and extrapolated to all; recall on "
        f"{min(args.recall_sample, args.approx_queries, args.exact_queries):,}; "
        f"k = {K}; whole run {(time.perf_counter() - START) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
