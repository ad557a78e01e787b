"""Stage `evaluate`: retrieval and clinical-relevance metrics of one (backbone, variant) index (README, Method choices).

Writes one long-format table, one row per number (contract `metrics` in tables.py), beside it the
per-query values that `summarize` needs for the paired tests against `zeroshot` (`metric_queries`),
and clinical precision by query finding (`finding_precision`). The published protocols
(`cxr_clip`, `label_5x200`) are in protocols.py; their rows have tasks `cxr_clip_i2t`,
`label_5x200_i2t` and `label_5x200_t2i`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr import metrics
from mtcxr.embedding_io import read_embeddings, writable
from mtcxr.models.heads import load_heads
from mtcxr.retrieval import protocols
from mtcxr.retrieval.index import read_index_info
from mtcxr.tables import CHEXPERT_LABELS, CONTRACTS, empty_table, read_table, write_table

log = logging.getLogger(__name__)


class _Rows:
    """Collects summary rows and per-query values as metrics are computed."""

    def __init__(self, n_boot: int, seed: int):
        self.summary: list[dict] = []
        self.queries: list[pl.DataFrame] = []
        self.findings: list[dict] = []
        self.n_boot, self.seed = n_boot, seed

    def per_query(
        self,
        task: str,
        metric: str,
        k: int | None,
        values: np.ndarray,
        classes: np.ndarray,
        balanced: str | None = None,
    ) -> None:
        """Record a per-query metric with its bootstrap CI (and, if named, its class-balanced form)."""
        value, low, high = metrics.bootstrap_ci(values, self.n_boot, self.seed)
        self.add(task, metric, k, value, low, high, len(values))
        self.queries.append(
            pl.DataFrame(
                {
                    "task": task,
                    "metric": metric,
                    "k": k,
                    "query": np.arange(len(values)),
                    "abnormal": classes,
                    "value": values.astype(np.float64),
                }
            )
        )
        if balanced is not None and len(np.unique(classes)) == 2:
            value, low, high = metrics.bootstrap_ci(values, self.n_boot, self.seed, groups=classes)
            self.add(task, balanced, k, value, low, high, len(values))
            for is_abnormal, name in ((False, "normal"), (True, "abnormal")):
                chosen = values[classes == is_abnormal]
                value, low, high = metrics.bootstrap_ci(chosen, self.n_boot, self.seed)
                self.add(task, f"{metric}_{name}", k, value, low, high, len(chosen))

    def add(
        self, task: str, metric: str, k: int | None, value: float, low: float | None, high: float | None, n: int
    ) -> None:
        self.summary.append(
            {"task": task, "metric": metric, "k": k, "value": value, "ci_low": low, "ci_high": high, "n_queries": n}
        )

    def by_finding(self, task: str, k: int, query_labels: np.ndarray, retrieved_labels: np.ndarray) -> None:
        """Clinical precision by query finding: over queries positive for it, the share of the top k positive too."""
        top = retrieved_labels[:, :k]
        for column, name in enumerate(CHEXPERT_LABELS):
            queries = query_labels[:, column]
            if not queries.any():
                continue
            values = top[queries, :, column].mean(axis=1, dtype=np.float64)
            value, low, high = metrics.bootstrap_ci(values, self.n_boot, self.seed)
            self.findings.append(
                {
                    "task": task,
                    "finding": name,
                    "k": k,
                    "value": value,
                    "ci_low": low,
                    "ci_high": high,
                    "n_queries": int(queries.sum()),
                }
            )


def _retrieval_metrics(
    rows: _Rows,
    task: str,
    queries: np.ndarray,
    keys: np.ndarray,
    targets: list[np.ndarray],
    query_abnormal: np.ndarray,
    key_abnormal: np.ndarray,
    query_labels: np.ndarray,
    key_labels: np.ndarray,
    ks: list[int],
    precision_k: int,
) -> None:
    ranks = metrics.first_hit_ranks(queries, keys, targets)
    for k in ks:
        rows.per_query(task, "recall", k, metrics.recall_at_k(ranks, k), query_abnormal)
    rows.per_query(task, "median_rank", None, ranks.astype(np.float64), query_abnormal)
    value, low, high = metrics.bootstrap_ci(ranks.astype(np.float64), rows.n_boot, rows.seed, statistic=np.median)
    rows.summary[-1].update(value=value, ci_low=low, ci_high=high)  # the median, not the mean, of ranks
    rows.add(task, "mean_rank", None, metrics.mean_rank(ranks), None, None, len(ranks))

    _, retrieved = metrics.topk_search(queries, keys, precision_k)
    relevant = key_abnormal[retrieved] == query_abnormal[:, None]
    rows.per_query(
        task,
        "precision",
        precision_k,
        metrics.precision_at_k(relevant, precision_k),
        query_abnormal,
        balanced="balanced_precision",
    )
    rows.per_query(
        task,
        "map",
        precision_k,
        metrics.average_precision_at_k(relevant, precision_k),
        query_abnormal,
        balanced="balanced_map",
    )
    retrieved_labels = key_labels[retrieved]
    rows.per_query(
        task,
        "exact_match",
        precision_k,
        metrics.label_set_exact_match(query_labels, retrieved_labels, precision_k),
        query_abnormal,
    )
    rows.per_query(
        task,
        "jaccard",
        precision_k,
        metrics.label_set_jaccard(query_labels, retrieved_labels, precision_k),
        query_abnormal,
    )
    rows.by_finding(task, precision_k, query_labels, retrieved_labels)


def _cxr_clip_metrics(
    rows: _Rows,
    images: np.ndarray,
    image_ids: np.ndarray,
    image_study: np.ndarray,
    image_views: np.ndarray,
    study_reports: list[str],
    study_vectors: np.ndarray,
    study_abnormal: np.ndarray,
    which_images: str,
) -> None:
    """CXR-CLIP's image->text protocol: Recall@1/5/10 and mean rank over exact-text-deduplicated reports."""
    if which_images == "every_frontal":
        queries = protocols.every_frontal_image(image_views)
    else:
        queries = protocols.first_frontal_images(image_ids, image_study, image_views)
    if not len(queries):
        log.warning("cxr_clip: no frontal test image; no rows")
        return
    ranks, gallery = protocols.cxr_clip_ranks(queries, images, image_study, study_reports, study_vectors)
    abnormal = study_abnormal[image_study[queries]]
    for k in protocols.PROTOCOL_KS:
        rows.per_query("cxr_clip_i2t", "recall", k, metrics.recall_at_k(ranks, k), abnormal)
    rows.per_query("cxr_clip_i2t", "mean_rank", None, ranks.astype(np.float64), abnormal)
    log.info(
        "cxr_clip: %d query images (%s), %d distinct exact reports; R@10 %.3f, mean rank %.1f",
        len(queries),
        which_images,
        gallery,
        metrics.recall_at_k(ranks, 10).mean(),
        ranks.mean(),
    )


def _label_5x200_metrics(
    rows: _Rows,
    images: np.ndarray,
    image_ids: np.ndarray,
    image_study: np.ndarray,
    image_views: np.ndarray,
    study_vectors: np.ndarray,
    labels: pl.DataFrame,
    study_abnormal: np.ndarray,
    per_class: int,
    sample_seed: int,
) -> None:
    """The 5x200 protocol: single-finding studies, class-hit Precision@1/5/10, image->text and text->image."""
    first_image = np.full(len(study_vectors), -1, dtype=np.int64)
    frontal = protocols.first_frontal_images(image_ids, image_study, image_views)
    first_image[image_study[frontal]] = frontal
    five = np.stack(
        [labels[name].cast(pl.Float64).fill_null(np.nan).to_numpy() for name in protocols.FIVE_CLASSES], axis=1
    )
    classes = np.where(first_image >= 0, protocols.single_finding_class(five), -1)
    studies, counts = protocols.sample_5x200(classes, per_class, sample_seed)
    if not len(studies):
        log.warning("label_5x200: no single-finding test study with a frontal image; no rows")
        return
    log.info("label_5x200: %d studies (%s)", len(studies), ", ".join(f"{name} {n}" for name, n in counts.items()))
    study_class, abnormal = classes[studies], study_abnormal[studies]
    query_images, reports = images[first_image[studies]], study_vectors[studies]
    for task, queries, keys in (("label_5x200_i2t", query_images, reports), ("label_5x200_t2i", reports, query_images)):
        for k, values in protocols.class_hit_precision(queries, keys, study_class, study_class).items():
            rows.per_query(task, "precision", k, values, abnormal)


def evaluate_retrieval(
    index_dir: str,
    labels_path: str,
    output_metrics: str,
    output_queries: str,
    output_findings: str | None = None,
    ks: list[int] = (1, 5, 10, 50),
    precision_k: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    protocol_names: list[str] = ("mtcxr", "cxr_clip", "label_5x200"),
    cxr_clip_images: str = "first_frontal",  # the rule resolves the schema's `auto` by dataset
    per_class: int = 200,
    sample_seed: int = 0,
) -> pl.DataFrame:
    """Compute the retrieval metrics of the `protocol_names` and the normal/abnormal classification
    metrics of one index; write and return the summary rows.

    `cxr_clip_images` (first_frontal | every_frontal) picks the cxr_clip queries; `per_class` and
    `sample_seed` draw the label_5x200 studies.
    """
    unknown = sorted(set(protocol_names) - set(protocols.PROTOCOLS))
    if unknown:
        raise ValueError(f"evaluate.protocols: unknown {unknown}; choose from {list(protocols.PROTOCOLS)}")
    folder = Path(index_dir)
    info = read_index_info(folder)
    image_ids, images, _ = read_embeddings(folder / "images.parquet", "image_id")
    image_table = pl.read_parquet(folder / "images.parquet", columns=["study_id", "view"])
    image_studies, image_views = image_table["study_id"].to_numpy(), image_table["view"].to_numpy().astype(object)
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
        if "mtcxr" in protocol_names:
            _retrieval_metrics(
                rows,
                "i2t",
                images,
                texts,
                [np.array([text_of_study[s]]) for s in image_study],
                study_abnormal[image_study],
                study_abnormal[first_study],
                study_positive[image_study],
                study_positive[first_study],
                ks,
                precision_k,
            )
            images_of_study: dict[int, list[int]] = {}
            for image, study in enumerate(image_study):
                images_of_study.setdefault(int(study), []).append(image)
            queried = np.array(sorted(images_of_study), dtype=np.int64)  # studies with at least one gallery image
            _retrieval_metrics(
                rows,
                "t2i",
                texts[text_of_study[queried]],
                images,
                [np.array(images_of_study[int(s)]) for s in queried],
                study_abnormal[queried],
                study_abnormal[image_study],
                study_positive[queried],
                study_positive[image_study],
                ks,
                precision_k,
            )
        if {"cxr_clip", "label_5x200"} & set(protocol_names):
            study_vectors, study_reports = _study_vectors(folder, study_ids)
            if "cxr_clip" in protocol_names:
                _cxr_clip_metrics(
                    rows,
                    images,
                    image_ids,
                    image_study,
                    image_views,
                    study_reports,
                    study_vectors,
                    study_abnormal,
                    cxr_clip_images,
                )
            if "label_5x200" in protocol_names:
                _label_5x200_metrics(
                    rows,
                    images,
                    image_ids,
                    image_study,
                    image_views,
                    study_vectors,
                    labels,
                    study_abnormal,
                    per_class,
                    sample_seed,
                )

        image_abnormal = study_abnormal[image_study]
        prototypes = np.load(folder / "prototypes.npy")
        # Prototype score: closer to the abnormal than to the normal train-report centroid.
        prototype_score = images @ prototypes[1] - images @ prototypes[0]
        rows.add(
            "classification", "auc", None, metrics.roc_auc(prototype_score, image_abnormal), None, None, len(images)
        )
        heads, head_cfg = load_heads(info["head_weights"], info["head_config"])
        if "bce" in (head_cfg.get("losses") or {}):
            import torch

            with torch.no_grad():
                logits = heads.abnormal_logit(torch.from_numpy(writable(images))).numpy()  # a zero-copy read
            rows.add(
                "classification",
                "classifier_auc",
                None,
                metrics.roc_auc(logits, image_abnormal),
                None,
                None,
                len(images),
            )
        # How spread the test embeddings are: near 1 they have collapsed and no ranking means anything.
        rows.add("embeddings", "image_mean_cosine", None, metrics.mean_pairwise_cosine(images), None, None, len(images))
        rows.add("embeddings", "report_mean_cosine", None, metrics.mean_pairwise_cosine(texts), None, None, len(texts))
        rows.add(
            "classification",
            "silhouette",
            None,
            metrics.cosine_silhouette(images, image_abnormal, seed=seed),
            None,
            None,
            len(images),
        )
    else:
        log.warning("%s: empty gallery (%d images, %d reports); no metrics", index_dir, len(images), len(texts))

    run = {
        "backbone": info["backbone"],
        "variant": info["variant"],
        "seed": info.get("seed"),
        "n_seeds": 1 if info.get("seed") is not None else None,
    }
    summary = _table([{**run, **row} for row in rows.summary], "metrics")
    write_table(summary, "metrics", output_metrics)
    queries = pl.concat(rows.queries) if rows.queries else empty_table("metric_queries")
    write_table(queries, "metric_queries", output_queries)
    if output_findings is not None:
        write_table(
            _table([{**run, "sd": None, **row} for row in rows.findings], "finding_precision"),
            "finding_precision",
            output_findings,
        )
    log.info(
        "%s/%s: %d metric rows over %d images and %d reports",
        info["backbone"],
        info["variant"],
        summary.height,
        len(image_ids),
        len(texts),
    )
    return summary


def _table(rows: list[dict], name: str) -> pl.DataFrame:
    """Rows (dicts holding a subset of the contract's columns) as a table of contract `name`."""
    schema = CONTRACTS[name]
    return pl.DataFrame([{column: row.get(column) for column in schema} for row in rows], schema=schema)


def _study_vectors(folder: Path, study_ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Every gallery study's own projected report vector and exact report text, in `study_ids` order."""
    path = folder / "studies.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; this index predates the published protocols. Rebuild it: "
            "snakemake --cores all --forcerun build_index"
        )
    ids, vectors, _ = read_embeddings(path, "study_id")
    reports = pl.read_parquet(path, columns=["report"])["report"].to_list()
    row = {study: i for i, study in enumerate(ids)}
    order = [row[study] for study in study_ids]
    return vectors[order], [reports[i] for i in order]
