"""Stage `evaluate`: retrieval and clinical-relevance metrics of one (backbone, variant) index (README, Method choices).

Writes one long-format table, one row per number (backbone, variant, task, metric, k, value,
ci_low, ci_high, n_queries), and beside it the per-query values that `summarize` needs for the
paired bootstrap against `zeroshot`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr import metrics
from mtcxr.embeddings import read_embeddings
from mtcxr.heads import load_heads
from mtcxr.index import read_index_info
from mtcxr.tables import CHEXPERT_LABELS, read_table

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = {
    "backbone": pl.String, "variant": pl.String, "task": pl.String, "metric": pl.String, "k": pl.Int64,
    "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "n_queries": pl.Int64,
}
QUERY_SCHEMA = {"task": pl.String, "metric": pl.String, "k": pl.Int64, "query": pl.Int64, "abnormal": pl.Boolean, "value": pl.Float64}


class _Rows:
    """Collects summary rows and per-query values as metrics are computed."""

    def __init__(self, n_boot: int, seed: int):
        self.summary: list[dict] = []
        self.queries: list[pl.DataFrame] = []
        self.n_boot, self.seed = n_boot, seed

    def per_query(self, task: str, metric: str, k: int | None, values: np.ndarray, classes: np.ndarray,
                  balanced: str | None = None) -> None:
        """Record a per-query metric with its bootstrap CI (and, if named, its class-balanced form)."""
        value, low, high = metrics.bootstrap_ci(values, self.n_boot, self.seed)
        self.add(task, metric, k, value, low, high, len(values))
        self.queries.append(pl.DataFrame({"task": task, "metric": metric, "k": k, "query": np.arange(len(values)),
                                          "abnormal": classes, "value": values.astype(np.float64)}, schema=QUERY_SCHEMA))
        if balanced is not None and len(np.unique(classes)) == 2:
            value, low, high = metrics.bootstrap_ci(values, self.n_boot, self.seed, groups=classes)
            self.add(task, balanced, k, value, low, high, len(values))
            for is_abnormal, name in ((False, "normal"), (True, "abnormal")):
                chosen = values[classes == is_abnormal]
                value, low, high = metrics.bootstrap_ci(chosen, self.n_boot, self.seed)
                self.add(task, f"{metric}_{name}", k, value, low, high, len(chosen))

    def add(self, task: str, metric: str, k: int | None, value: float, low: float | None, high: float | None, n: int) -> None:
        self.summary.append({"task": task, "metric": metric, "k": k, "value": value, "ci_low": low, "ci_high": high, "n_queries": n})


def _retrieval_metrics(rows: _Rows, task: str, queries: np.ndarray, keys: np.ndarray, targets: list[np.ndarray],
                       query_abnormal: np.ndarray, key_abnormal: np.ndarray, query_labels: np.ndarray,
                       key_labels: np.ndarray, ks: list[int], precision_k: int) -> None:
    ranks = metrics.first_hit_ranks(queries, keys, targets)
    for k in ks:
        rows.per_query(task, "recall", k, metrics.recall_at_k(ranks, k), query_abnormal)
    rows.per_query(task, "median_rank", None, ranks.astype(np.float64), query_abnormal)
    value, low, high = metrics.bootstrap_ci(ranks.astype(np.float64), rows.n_boot, rows.seed, statistic=np.median)
    rows.summary[-1].update(value=value, ci_low=low, ci_high=high)  # the median, not the mean, of ranks
    rows.add(task, "mean_rank", None, metrics.mean_rank(ranks), None, None, len(ranks))

    _, retrieved = metrics.topk_search(queries, keys, precision_k)
    relevant = key_abnormal[retrieved] == query_abnormal[:, None]
    rows.per_query(task, "precision", precision_k, metrics.precision_at_k(relevant, precision_k), query_abnormal,
                   balanced="balanced_precision")
    rows.per_query(task, "map", precision_k, metrics.average_precision_at_k(relevant, precision_k), query_abnormal,
                   balanced="balanced_map")
    retrieved_labels = key_labels[retrieved]
    rows.per_query(task, "exact_match", precision_k,
                   metrics.label_set_exact_match(query_labels, retrieved_labels, precision_k), query_abnormal)
    rows.per_query(task, "jaccard", precision_k,
                   metrics.label_set_jaccard(query_labels, retrieved_labels, precision_k), query_abnormal)


def evaluate_retrieval(
    index_dir: str,
    labels_path: str,
    output_metrics: str,
    output_queries: str,
    ks: list[int] = (1, 5, 10, 50),
    precision_k: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
) -> pl.DataFrame:
    """Compute i2t, t2i and normal/abnormal metrics of one index; write and return the summary rows."""
    folder = Path(index_dir)
    info = read_index_info(folder)
    image_ids, images, _ = read_embeddings(folder / "images.parquet", "image_id")
    image_studies = pl.read_parquet(folder / "images.parquet", columns=["study_id"])["study_id"].to_numpy()
    _, texts, _ = read_embeddings(folder / "texts.parquet", "text_id")
    study_texts = pl.read_parquet(folder / "study_texts.parquet")

    labels = read_table(labels_path, "labels").filter(pl.col("study_id").is_in(study_texts["study_id"].to_list()))
    labels = study_texts.join(labels, on="study_id", how="left", maintain_order="left")
    study_ids = labels["study_id"].to_numpy()
    study_abnormal = labels["abnormal"].fill_null(False).to_numpy().astype(bool)
    study_positive = np.stack([(labels[name].fill_null(0) == 1).to_numpy() for name in CHEXPERT_LABELS], axis=1)
    text_of_study = labels["text_row"].to_numpy()
    study_index = {s: i for i, s in enumerate(study_ids)}
    image_study = np.array([study_index[s] for s in image_studies], dtype=np.int64)
    # A distinct report stands for the first study that has it (they share text, hence labels).
    first_study = np.full(len(texts), -1, dtype=np.int64)
    for study, text_row in enumerate(text_of_study):
        if first_study[text_row] < 0:
            first_study[text_row] = study

    rows = _Rows(n_boot, seed)
    ks = sorted(set(int(k) for k in ks))
    if len(images) and len(texts):
        _retrieval_metrics(rows, "i2t", images, texts, [np.array([text_of_study[s]]) for s in image_study],
                           study_abnormal[image_study], study_abnormal[first_study], study_positive[image_study],
                           study_positive[first_study], ks, precision_k)
        images_of_study: dict[int, list[int]] = {}
        for image, study in enumerate(image_study):
            images_of_study.setdefault(int(study), []).append(image)
        queried = np.array(sorted(images_of_study), dtype=np.int64)  # studies with at least one gallery image
        _retrieval_metrics(rows, "t2i", texts[text_of_study[queried]], images,
                           [np.array(images_of_study[int(s)]) for s in queried], study_abnormal[queried],
                           study_abnormal[image_study], study_positive[queried], study_positive[image_study],
                           ks, precision_k)

        image_abnormal = study_abnormal[image_study]
        prototypes = np.load(folder / "prototypes.npy")
        # Prototype score: closer to the abnormal than to the normal train-report centroid.
        prototype_score = images @ prototypes[1] - images @ prototypes[0]
        rows.add("classification", "auc", None, metrics.roc_auc(prototype_score, image_abnormal), None, None, len(images))
        heads, head_cfg = load_heads(info["head_weights"], info["head_config"])
        if "bce" in (head_cfg.get("losses") or {}):
            import torch

            with torch.no_grad():
                logits = heads.abnormal_logit(torch.from_numpy(images)).numpy()
            rows.add("classification", "classifier_auc", None, metrics.roc_auc(logits, image_abnormal), None, None, len(images))
        rows.add("classification", "silhouette", None, metrics.cosine_silhouette(images, image_abnormal, seed=seed),
                 None, None, len(images))
    else:
        log.warning("%s: empty gallery (%d images, %d reports); no metrics", index_dir, len(images), len(texts))

    summary = pl.DataFrame(
        [{"backbone": info["backbone"], "variant": info["variant"], **row} for row in rows.summary], schema=SUMMARY_SCHEMA
    )
    Path(output_metrics).parent.mkdir(parents=True, exist_ok=True)
    summary.write_parquet(output_metrics)
    queries = pl.concat(rows.queries) if rows.queries else pl.DataFrame(schema=QUERY_SCHEMA)
    queries.write_parquet(output_queries)
    log.info("%s/%s: %d metric rows over %d images and %d reports", info["backbone"], info["variant"],
             summary.height, len(image_ids), len(texts))
    return summary
