"""Time the `score_generation` stage at the size of MIMIC-CXR's official test split.

Builds the generated-report tables a MIMIC run of `configs/mimic_cxr.yaml` hands the stage:
3,269 test studies (the official split's test studies) and 15 methods (the random and
most-frequent baselines; retrieval and oracle for each of the preset's 6 head variants; X-TRA's
augmented query). References and generated reports are synthetic findings sections
(`mtcxr.data.datasets.synthetic`), each method's report for a study drawn from a pool of train reports, so
that METEOR aligns realistic sentences; pass --iu-reports to draw them from IU X-ray's real
findings instead (`indiana_reports.csv`). Then it runs `mtcxr.generation.score.score_generation`
exactly as the rule does (1,000 bootstrap resamples) and reports the wall time of each part.

Usage: .venv/bin/python benchmarks/generation_scoring.py [--studies 3269] [--methods 15] [--iu-reports CSV]
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time

import numpy as np
import polars as pl

from mtcxr.data.datasets.synthetic import draw_studies, report_sections, write_report
from mtcxr.generation import nlg
from mtcxr.generation import score as generation_scores
from mtcxr.tables import write_table


def synthetic_findings(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    studies = draw_studies(n, n, seed, 0.0, "b")
    texts = []
    for study in studies:
        write_report(study, rng)
        texts.append(report_sections(study)[0])
    return texts


def iu_findings(path: str) -> list[str]:
    table = pl.read_csv(path).filter(pl.col("findings").is_not_null() & (pl.col("findings").str.len_chars() > 20))
    return table["findings"].to_list()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=3269)
    parser.add_argument("--methods", type=int, default=15)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--iu-reports", help="indiana_reports.csv: draw texts from IU X-ray's real findings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    pool = iu_findings(args.iu_reports) if args.iu_reports else synthetic_findings(args.studies * 3, seed=1)
    rng = np.random.default_rng(0)
    references = [pool[i] for i in rng.integers(0, len(pool), args.studies)]
    studies = [f"s{i:06d}" for i in range(args.studies)]
    names = ["random", "most_frequent"] + ["retrieval", "oracle"] * ((args.methods - 2) // 2) + ["xtra"]
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, method in enumerate(names[: args.methods]):
            baseline = method in ("random", "most_frequent")
            picks = np.full(args.studies, 0) if method == "most_frequent" else rng.integers(0, len(pool), args.studies)
            table = pl.DataFrame(
                {
                    "study_id": studies,
                    "image_id": [f"{s}-a" for s in studies],
                    "method": method,
                    "backbone": None if baseline else "bench",
                    "variant": None if baseline else f"v{i // 2}",
                    "rank": None,
                    "source_study_id": [f"t{p}" for p in picks],
                    "generated": [pool[p] for p in picks],
                    "reference": references,
                }
            )
            paths.append(f"{folder}/g{i}.parquet")
            write_table(table, "generated", paths[-1])
        words = np.mean([len(text.split()) for text in references])
        start = time.perf_counter()
        generation_scores.score_generation(
            paths,
            f"{folder}/per_study.parquet",
            f"{folder}/metrics.parquet",
            f"{folder}/metrics.csv",
            "auto",
            "positive",
            args.bootstrap,
            0,
        )
        elapsed = time.perf_counter() - start
    print(
        f"\n{platform.processor() or platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, java {nlg.find_java()}"
    )
    print(
        f"{args.studies} studies x {args.methods} methods ({words:.0f} words per reference, "
        f"{'IU X-ray' if args.iu_reports else 'synthetic'} findings), {args.bootstrap} resamples: "
        f"score_generation {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()
