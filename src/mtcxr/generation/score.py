"""Stage `score_generation`: NLG metrics and clinical efficacy of every generation method, with bootstrap CIs.

Every method is scored on the same test studies (those every method wrote a report for; any
other is named in the log). Corpus metrics are computed as the literature reports them
(`mtcxr.generation.nlg`, `mtcxr.generation.clinical`). The 95% intervals come from one set of seeded bootstrap
resamples of studies (`evaluate.bootstrap` of them, `evaluate.seed`), shared by all methods, so
that the difference of a method and the random-report baseline is a paired bootstrap: each
resample recomputes both corpus metrics on the same studies (corpus BLEU and METEOR from the
resampled sufficient statistics, not from per-study scores).

Outputs: the per-study table (`generation_scores` contract: texts, per-study scores and the
sufficient statistics the bootstrap used) and the long-format metrics table
(`generation_metrics` contract), also written as CSV.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from mtcxr import metrics
from mtcxr.generation import clinical, nlg
from mtcxr.tables import CHEXPERT_LABELS, read_table, write_table

log = logging.getLogger(__name__)

BASELINE = "random"
NLG_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")
EFFICACY_AVERAGES = tuple(
    f"{name}_{average}{suffix}"
    for suffix in ("", "5")
    for average in ("micro", "macro")
    for name in ("precision", "recall", "f1")
)


def method_name(backbone: str | None, variant: str | None, method: str) -> str:
    """`backbone/variant/method`, or the method alone for the baselines that use no backbone."""
    return method if backbone is None else f"{backbone}/{variant}/{method}"


class _Method:
    """One method's per-study statistics over the common studies, in study order."""

    def __init__(self, name: str, rows: pl.DataFrame):
        self.name, self.rows = name, rows
        first = rows.row(0, named=True)
        self.backbone, self.variant, self.method = first["backbone"], first["variant"], first["method"]

    def score(
        self,
        tokens: dict[str, str],
        positives: dict[str, np.ndarray],
        meteor: nlg.Meteor,
        meteor_cache: dict[tuple[str, str], list[float]],
    ) -> None:
        hyps = [tokens[text] for text in self.rows["generated"]]
        refs = [tokens[text] for text in self.rows["reference"]]
        counts = [nlg.bleu_counts(h, r) for h, r in zip(hyps, refs)]
        self.guess = np.array([c[0] for c in counts], dtype=np.float64).reshape(-1, nlg.BLEU_ORDER)
        self.correct = np.array([c[1] for c in counts], dtype=np.float64).reshape(-1, nlg.BLEU_ORDER)
        self.test_length = np.array([c[2] for c in counts], dtype=np.float64)
        self.ref_length = np.array([c[3] for c in counts], dtype=np.float64)
        expected = nlg.pycocoevalcap_bleu(hyps, refs)
        ours = nlg.corpus_bleu(self.guess.sum(0), self.correct.sum(0), self.test_length.sum(), self.ref_length.sum())
        if not np.allclose(ours, expected, rtol=1e-9, atol=1e-12):
            raise RuntimeError(f"{self.name}: corpus BLEU from counts {ours} differs from pycocoevalcap's {expected}")
        for pair in zip(hyps, refs):
            if pair not in meteor_cache:
                meteor_cache[pair] = meteor.stats(*pair)
        self.meteor_stats = np.array([meteor_cache[pair] for pair in zip(hyps, refs)], dtype=np.float64)
        self.meteor, self.meteor_corpus = meteor.evaluate(self.meteor_stats)
        nlg.check_meteor_aggregate(self.meteor_stats, self.meteor_corpus)
        self.meteor_summable = nlg.meteor_summable(self.meteor_stats)
        self.rouge = nlg.rouge_l(hyps, refs)
        self.cider = nlg.cider_d(hyps, refs)
        self.reference_positive = np.stack([positives[t] for t in self.rows["reference"]])
        self.generated_positive = np.stack([positives[t] for t in self.rows["generated"]])
        self.confusion = clinical.confusion(self.reference_positive, self.generated_positive)

    def corpus(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every corpus metric for study weights (B, N) (counts of each study in a resample); values (B,)."""
        n = weights.sum(axis=1)
        bleu = nlg.corpus_bleu(
            weights @ self.guess, weights @ self.correct, weights @ self.test_length, weights @ self.ref_length
        )
        out = {f"bleu{i + 1}": bleu[:, i] for i in range(nlg.BLEU_ORDER)}
        out["meteor"] = nlg.meteor_aggregate(weights @ self.meteor_summable)
        out["rouge_l"] = weights @ self.rouge / n
        out["cider"] = weights @ self.cider / n
        summed = (weights @ self.confusion.reshape(len(self.rows), -1)).reshape(len(weights), 3, len(CHEXPERT_LABELS))
        out.update({f"ce_{key}": value for key, value in clinical.efficacy(summed).items()})
        return out

    def per_study(self) -> pl.DataFrame:
        single = nlg.corpus_bleu(self.guess, self.correct, self.test_length, self.ref_length)
        study_efficacy = clinical.efficacy(self.confusion)
        names = np.array(CHEXPERT_LABELS, dtype=object)
        return self.rows.select("study_id", "backbone", "variant", "method", "generated", "reference").with_columns(
            **{f"bleu{i + 1}": pl.Series(single[:, i]) for i in range(nlg.BLEU_ORDER)},
            meteor=pl.Series(self.meteor),
            rouge_l=pl.Series(self.rouge),
            cider=pl.Series(self.cider),
            ce_f1=pl.Series(study_efficacy["f1_micro"]),
            reference_positive=pl.Series(
                [list(names[row]) for row in self.reference_positive], dtype=pl.List(pl.String)
            ),
            generated_positive=pl.Series(
                [list(names[row]) for row in self.generated_positive], dtype=pl.List(pl.String)
            ),
            bleu_guess=pl.Series(self.guess.astype(np.int64).tolist(), dtype=pl.List(pl.Int64)),
            bleu_correct=pl.Series(self.correct.astype(np.int64).tolist(), dtype=pl.List(pl.Int64)),
            test_length=pl.Series(self.test_length.astype(np.int64)),
            reference_length=pl.Series(self.ref_length.astype(np.int64)),
            meteor_stats=pl.Series(self.meteor_stats.tolist(), dtype=pl.List(pl.Float64)),
        )


def _common_studies(table: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Keep the studies every method generated for; return the table and the studies left out."""
    methods = table.select("method", "backbone", "variant").unique().height
    per_study = table.group_by("study_id").len()
    common = per_study.filter(pl.col("len") == methods)["study_id"]
    left_out = sorted(set(per_study["study_id"]) - set(common))
    if left_out:
        log.warning(
            "%d test studies lack a report from some method (e.g. no image embedding) and are scored for none: %s",
            len(left_out),
            ", ".join(left_out[:5]),
        )
    return table.filter(pl.col("study_id").is_in(common.implode())).sort("study_id"), left_out


def resample_weights(n_studies: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_studies) float64: how often each study is drawn in each seeded bootstrap resample."""
    rng = np.random.default_rng(seed)
    weights = np.empty((n_boot, n_studies), dtype=np.float64)
    for b in range(n_boot):
        weights[b] = np.bincount(rng.integers(0, n_studies, n_studies), minlength=n_studies)
    return weights


def _metric_rows(methods: list[_Method], n_boot: int, seed: int) -> pl.DataFrame:
    n = len(methods[0].rows)
    weights = resample_weights(n, n_boot, seed)
    ones = np.ones((1, n))
    observed = {m.name: {key: float(value[0]) for key, value in m.corpus(ones).items()} for m in methods}
    for m in methods:  # METEOR's point value is the jar's own (equal to ours, checked)
        observed[m.name]["meteor"] = m.meteor_corpus
    resampled = {m.name: m.corpus(weights) for m in methods}
    baseline = next((m.name for m in methods if m.method == BASELINE), None)
    rows = []
    for m in methods:
        for key, value in observed[m.name].items():
            metric, observation = key, None
            for name in ("precision", "recall", "f1"):
                label = key.removeprefix(f"ce_{name}_")
                if label in CHEXPERT_LABELS:
                    metric, observation = f"ce_{name}", label
            distribution = resampled[m.name][key]
            low, high = (float(v) for v in np.percentile(distribution, [2.5, 97.5]))
            row = {
                "backbone": m.backbone,
                "variant": m.variant,
                "method": m.method,
                "metric": metric,
                "observation": observation,
                "value": value,
                "ci_low": low,
                "ci_high": high,
                "n_studies": n,
                "difference": None,
                "difference_low": None,
                "difference_high": None,
                "p_value": None,
                "n_boot": n_boot,
            }
            if baseline is not None and m.name != baseline:
                test = metrics.paired_difference(
                    observed[baseline][key], value, resampled[baseline][key], distribution, n_boot
                )
                row.update(
                    difference=test["difference"],
                    difference_low=test["ci_low"],
                    difference_high=test["ci_high"],
                    p_value=test["p_value"],
                )
            rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def score_generation(
    generated_files: list[str],
    output_per_study: str,
    output_metrics: str,
    output_csv: str,
    java: str,
    uncertain: str,
    n_boot: int,
    seed: int,
) -> pl.DataFrame:
    """Score every method's generated reports; write the per-study and metrics tables; return the metrics."""
    java_path = nlg.find_java(java)  # before any work: a missing Java is the likeliest fault here
    table, _ = _common_studies(pl.concat([read_table(path, "generated") for path in generated_files]))
    if table.is_empty():
        from mtcxr.errors import InputError

        raise InputError(
            "no test study has a generated report from every method: nothing to score "
            "(see the rejects of generate_reports in the generation folder)."
        )
    keys = ["backbone", "variant", "method"]
    methods = [_Method(method_name(*key), rows) for key, rows in table.group_by(keys, maintain_order=True)]
    methods.sort(key=lambda m: (m.backbone is not None, m.backbone or "", m.variant or "", m.method))
    texts = list(dict.fromkeys(table["generated"].to_list() + table["reference"].to_list()))
    log.info(
        "%d methods x %d test studies; tokenizing %d distinct texts with %s",
        len(methods),
        len(methods[0].rows),
        len(texts),
        java_path,
    )
    tokens = dict(zip(texts, nlg.ptb_tokenize(texts, java_path)))
    positives = dict(zip(texts, clinical.positive_findings(texts, uncertain)))
    cache: dict[tuple[str, str], list[float]] = {}
    meteor = nlg.shared_meteor(java_path)
    for m in methods:
        m.score(tokens, positives, meteor, cache)
        log.info(
            "%s: BLEU-4 %.4f, METEOR %.4f",
            m.name,
            float(m.corpus(np.ones((1, len(m.rows))))["bleu4"][0]),
            m.meteor_corpus,
        )
    write_table(pl.concat([m.per_study() for m in methods]), "generation_scores", output_per_study)
    result = write_table(_metric_rows(methods, n_boot, seed), "generation_metrics", output_metrics)
    result.write_csv(output_csv)
    return result
