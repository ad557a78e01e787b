"""Stage `evaluate`: retrieval and clinical-relevance metrics of one (backbone, variant) index (README, Method choices).

Writes one long-format table, one row per number (contract `metrics` in tables.py), beside it the
per-query values that `summarize` needs for the paired tests against `zeroshot` (`metric_queries`),
and clinical precision by query finding (`finding_precision`). The retrieval protocols (mtcxr's own
and the published `cxr_clip`, `label_5x200`) are the registry `protocols.PROTOCOLS`: this stage reads
the index into a `protocols.Gallery` and runs the ones `evaluate.protocols` lists; then the
classification and embedding-spread rows, which every evaluation has, and zero-shot classification with
text prompts (`retrieval.zeroshot`, where the backbone's prompts are given; projected here in NumPy): its rows join the metrics
table and its per-observation AUCs go to a table of their own (`zeroshot_auc`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr import metrics
from mtcxr.embedding_io import read_embeddings
from mtcxr.models import heads_numpy
from mtcxr.retrieval.index_info import read_index_info
from mtcxr.retrieval.protocols import PROTOCOLS, EvaluateSettings, Gallery, MetricRows
from mtcxr.retrieval.zeroshot import read_prompts, zeroshot_classification
from mtcxr.tables import CHEXPERT_LABELS, CONTRACTS, empty_table, read_table, write_table

log = logging.getLogger(__name__)


__all__ = ["EvaluateSettings", "evaluate_retrieval"]


def evaluate_retrieval(
    index_dir: str,
    labels_path: str,
    output_metrics: str,
    output_queries: str,
    output_findings: str | None = None,
    settings: EvaluateSettings | None = None,
    prompts: str | None = None,
    output_zeroshot: str | None = None,
) -> pl.DataFrame:
    """Compute the retrieval metrics of the protocols `settings.protocols` lists and the normal/abnormal
    classification metrics of one index; write and return the summary rows (settings: the schema's
    defaults where None). With `prompts` (the backbone's prompt embeddings, `embed_prompts`) also zero-shot
    classification, the prompts projected through the index's text head: its rows join the summary, its
    per-observation AUCs go to `output_zeroshot`."""
    settings = settings or EvaluateSettings()
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
    gallery = Gallery(
        image_ids=image_ids,
        images=images,
        image_study=image_study,
        image_views=image_views,
        texts=texts,
        text_of_study=text_of_study,
        first_study=first_study,
        labels=labels,
        study_abnormal=study_abnormal,
        study_positive=study_positive,
        read_studies=lambda: _study_vectors(folder, study_ids),
    )

    rows = MetricRows(settings.n_boot, settings.seed)
    zeroshot_rows: list[dict] = []
    if len(images) and len(texts):
        for name, protocol in PROTOCOLS.items():  # registry order, whatever the order of the config's list
            if name in settings.protocols:
                protocol(gallery, rows, settings)
        head_weights = heads_numpy.load_weights(info["head_weights"])
        if prompts is not None:
            raw = read_prompts(prompts)
            projected = replace(raw, vectors=heads_numpy.project_numpy(head_weights, "text", raw.vectors))
            zeroshot_rows = zeroshot_classification(gallery, projected, rows, settings)

        image_abnormal = study_abnormal[image_study]
        prototypes = np.load(folder / "prototypes.npy")
        # Prototype score: closer to the abnormal than to the normal train-report centroid.
        prototype_score = images @ prototypes[1] - images @ prototypes[0]
        rows.add(
            "classification", "auc", None, metrics.roc_auc(prototype_score, image_abnormal), None, None, len(images)
        )
        head_cfg = json.loads(Path(info["head_config"]).read_text())
        if "bce" in (head_cfg.get("losses") or {}):
            logits = heads_numpy.abnormal_logits(head_weights, images)
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
            metrics.cosine_silhouette(images, image_abnormal, seed=settings.seed),
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
    if output_zeroshot is not None:
        write_table(_table([{**run, **row} for row in zeroshot_rows], "zeroshot_auc"), "zeroshot_auc", output_zeroshot)
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
