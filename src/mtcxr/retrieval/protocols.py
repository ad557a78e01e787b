"""Published retrieval protocols, so that mtcxr's numbers can stand beside published tables (README,
Comparing with published numbers). `evaluate` runs the ones `evaluate.protocols` lists:

- `mtcxr`: this project's own (every gallery image, reports deduplicated by normalised text; evaluate.py).
- `cxr_clip`: CXR-CLIP's image→text retrieval (kakaobrain/cxr-clip, `evaluator.retrieval_image_text`):
  the queries are one image per study, its first frontal image (on Open-I every frontal image); the
  gallery is the queries' reports deduplicated by *exact* text, each distinct text standing once;
  Recall@1/5/10 and the mean rank of the query's own report.
- `label_5x200`: the label-based 5×200 protocol (GLoRIA's CheXpert 5×200, BenchX's MIMIC 5×200): up to
  200 test studies for each of the five competition findings with that finding alone positive; a
  retrieved item is a hit when it is of the query's class; Precision@1/5/10, image→text and text→image.

`PROTOCOLS` is the one registry of protocol names `evaluate.protocols` may hold (the config schema lists
the same names; a test holds them equal): `evaluate` runs each listed one on the index's `Gallery`, in
registry order, into one `MetricRows`. `PROTOCOL_TASKS` names the tasks each writes, by which the summary
and the figures tell which protocols a backbone was evaluated with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from mtcxr import metrics
from mtcxr.tables import CHEXPERT_LABELS, FRONTAL_VIEWS

log = logging.getLogger(__name__)

# GLoRIA's CheXpert 5x200 classes (the CheXpert competition findings), in its order.
FIVE_CLASSES = ("atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion")
PROTOCOL_KS = (1, 5, 10)


def first_frontal_images(image_ids: np.ndarray, image_study: np.ndarray, image_views: np.ndarray) -> np.ndarray:
    """Indices of each study's first frontal image (lowest image_id), one per study that has one, by study."""
    first: dict[int, int] = {}
    for image, (image_id, study, view) in enumerate(zip(image_ids, image_study, image_views)):
        if view not in FRONTAL_VIEWS:
            continue
        study = int(study)
        if study not in first or image_id < image_ids[first[study]]:
            first[study] = image
    return np.array([first[study] for study in sorted(first)], dtype=np.int64)


def every_frontal_image(image_views: np.ndarray) -> np.ndarray:
    """Indices of every frontal image (CXR-CLIP's Open-I test set: 3,955 frontal image-report pairs)."""
    return np.flatnonzero(np.isin(np.asarray(image_views, dtype=object), FRONTAL_VIEWS)).astype(np.int64)


def exact_text_gallery(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first item of each distinct exact text, distinct-text index of every item)."""
    seen: dict[str, int] = {}
    first, of_item = [], np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        if text not in seen:
            seen[text] = len(first)
            first.append(i)
        of_item[i] = seen[text]
    return np.array(first, dtype=np.int64), of_item


def cxr_clip_ranks(
    query_images: np.ndarray,
    image_vectors: np.ndarray,
    image_study: np.ndarray,
    study_reports: list[str],
    study_vectors: np.ndarray,
) -> tuple[np.ndarray, int]:
    """(1-based rank of each query image's own report among the distinct exact texts, gallery size).

    The gallery holds the reports of the queried images' studies (one entry per query, as in
    CXR-CLIP's test CSV), deduplicated by exact text.
    """
    query_studies = image_study[query_images]
    first, of_query = exact_text_gallery([study_reports[s] for s in query_studies])
    gallery = study_vectors[query_studies[first]]
    ranks = metrics.first_hit_ranks(image_vectors[query_images], gallery, of_query)
    return ranks, len(first)


def single_finding_class(five: np.ndarray) -> np.ndarray:
    """Class index (0..4) of each study whose one positive among the five is certain and alone, else -1.

    `five` is (S, 5) with values 1 (positive), 0 (negative), -1 (uncertain) or NaN (not mentioned).
    A study qualifies when exactly one class is 1 and no other is 1 or -1: an uncertain mention is
    not a clean negative.
    """
    five = np.asarray(five, dtype=np.float64)
    positive = five == 1
    uncertain = five == -1
    alone = (positive.sum(axis=1) == 1) & ~uncertain.any(axis=1)
    return np.where(alone, positive.argmax(axis=1), -1).astype(np.int64)


def sample_5x200(classes: np.ndarray, per_class: int = 200, seed: int = 0) -> tuple[np.ndarray, dict[str, int]]:
    """(sorted indices of the sampled studies, studies drawn per class name).

    Draws `per_class` studies of each class without replacement by `seed`, or every study of a class
    that has fewer (logged).
    """
    rng = np.random.default_rng(seed)
    chosen, counts = [], {}
    for index, name in enumerate(FIVE_CLASSES):
        members = np.flatnonzero(np.asarray(classes) == index)
        take = min(per_class, len(members))
        if take < per_class:
            log.warning(
                "label_5x200: %s has %d single-finding test studies, fewer than %d; all are used",
                name,
                len(members),
                per_class,
            )
        chosen.append(np.sort(rng.choice(members, take, replace=False)) if take else members[:0])
        counts[name] = int(take)
    return np.sort(np.concatenate(chosen)).astype(np.int64), counts


def class_hit_precision(
    queries: np.ndarray,
    keys: np.ndarray,
    query_class: np.ndarray,
    key_class: np.ndarray,
    ks: tuple[int, ...] = PROTOCOL_KS,
) -> dict[int, np.ndarray]:
    """Per-query Precision@k (k -> (Q,) float64): the fraction of the top k keys of the query's class."""
    _, retrieved = metrics.topk_search(queries, keys, max(ks))
    hits = np.asarray(key_class)[retrieved] == np.asarray(query_class)[:, None]
    return {k: metrics.precision_at_k(hits, k) for k in ks}


# --------------------------------------------------------------------------------------------------
# What a protocol reads and writes
# --------------------------------------------------------------------------------------------------

CXR_CLIP_IMAGES = ("first_frontal", "every_frontal")
# How an uncertain (-1) label counts in an AUC: left out (CheXpert's U-Ignore), as negative or as positive.
UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")


@dataclass(frozen=True)
class EvaluateSettings:
    """The `evaluate:` settings of one evaluation; the defaults are the config schema's.

    `cxr_clip_images` (first_frontal | every_frontal) picks the cxr_clip queries: the rule resolves the
    schema's `auto` by dataset. `per_class` and `sample_seed` draw the label_5x200 studies (and those of
    zero-shot 5x200 accuracy); `zeroshot_uncertain` (ignore | zeros | ones) counts uncertain labels in the
    zero-shot AUCs (`evaluate.zeroshot_classification.uncertain`).
    """

    ks: tuple[int, ...] = (1, 5, 10, 50)
    precision_k: int = 10
    n_boot: int = 1000
    seed: int = 0
    protocols: tuple[str, ...] = ("mtcxr", "cxr_clip", "label_5x200")
    cxr_clip_images: str = "first_frontal"
    per_class: int = 200
    sample_seed: int = 0
    zeroshot_uncertain: str = "ignore"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f"evaluate.protocols: unknown {unknown}; choose from {list(PROTOCOLS)}")
        if self.cxr_clip_images not in CXR_CLIP_IMAGES:
            raise ValueError(
                f"evaluate.cxr_clip_images is {self.cxr_clip_images!r} here; pass one of {list(CXR_CLIP_IMAGES)} "
                "(the workflow resolves the config's `auto` by dataset)"
            )
        if self.zeroshot_uncertain not in UNCERTAIN_POLICIES:
            raise ValueError(
                f"evaluate.zeroshot_classification.uncertain is {self.zeroshot_uncertain!r}; choose one of "
                f"{list(UNCERTAIN_POLICIES)}"
            )

    @classmethod
    def from_config(cls, section: Mapping) -> EvaluateSettings:
        """From the config's `evaluate:` section, or a rule's params of the same names (`bootstrap`,
        `label_5x200: {per_class, seed}`, `zeroshot_classification: {uncertain}`); a key it lacks keeps its
        default."""
        label_5x200 = section.get("label_5x200") or {}
        zeroshot = section.get("zeroshot_classification") or {}
        given = {
            "ks": tuple(section["ks"]) if "ks" in section else None,
            "precision_k": section.get("precision_k"),
            "n_boot": section.get("bootstrap"),
            "seed": section.get("seed"),
            "protocols": tuple(section["protocols"]) if "protocols" in section else None,
            "cxr_clip_images": section.get("cxr_clip_images"),
            "per_class": label_5x200.get("per_class"),
            "sample_seed": label_5x200.get("seed"),
            "zeroshot_uncertain": zeroshot.get("uncertain"),
        }
        return cls(**{name: value for name, value in given.items() if value is not None})


class MetricRows:
    """Collects summary rows, per-query values and clinical precision by finding as metrics are computed."""

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


@dataclass
class Gallery:
    """One index's test split as the protocols read it: projected image vectors (I), the distinct
    reports' vectors (T), and the gallery's studies (S) in `labels` order."""

    image_ids: np.ndarray  # (I,)
    images: np.ndarray  # (I, D)
    image_study: np.ndarray  # (I,) index into the studies
    image_views: np.ndarray  # (I,) object
    texts: np.ndarray  # (T, D)
    text_of_study: np.ndarray  # (S,) row of each study's report in `texts`
    first_study: np.ndarray  # (T,) the first study with each distinct report (they share text, hence labels)
    labels: pl.DataFrame  # (S,) the studies' label rows
    study_abnormal: np.ndarray  # (S,) bool
    study_positive: np.ndarray  # (S, 14) bool: label == 1
    # Every study's own report vector and exact text: read only when a protocol needs them, as an index
    # built before the published protocols has none.
    read_studies: Callable[[], tuple[np.ndarray, list[str]]]
    # Samples drawn once and shared by what uses them (the 5x200 studies: label_5x200 and zero-shot accuracy).
    samples: dict = field(default_factory=dict)

    @cached_property
    def studies(self) -> tuple[np.ndarray, list[str]]:
        """(S, D) each study's own projected report vector and (S,) its exact report text."""
        return self.read_studies()


# --------------------------------------------------------------------------------------------------
# The protocols
# --------------------------------------------------------------------------------------------------


def _direction_metrics(
    rows: MetricRows,
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
    """mtcxr's metrics of one direction (i2t or t2i): Recall@K and ranks, Precision@k and mAP by
    normal/abnormal status, label-set agreement, and clinical precision by query finding."""
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


def mtcxr_protocol(gallery: Gallery, rows: MetricRows, settings: EvaluateSettings) -> None:
    """mtcxr's own: every gallery image against the distinct reports (i2t), every study's report against
    the gallery images (t2i, a hit any image of its study)."""
    g = gallery
    ks = sorted(set(int(k) for k in settings.ks))
    _direction_metrics(
        rows,
        "i2t",
        g.images,
        g.texts,
        [np.array([g.text_of_study[s]]) for s in g.image_study],
        g.study_abnormal[g.image_study],
        g.study_abnormal[g.first_study],
        g.study_positive[g.image_study],
        g.study_positive[g.first_study],
        ks,
        settings.precision_k,
    )
    images_of_study: dict[int, list[int]] = {}
    for image, study in enumerate(g.image_study):
        images_of_study.setdefault(int(study), []).append(image)
    queried = np.array(sorted(images_of_study), dtype=np.int64)  # studies with at least one gallery image
    _direction_metrics(
        rows,
        "t2i",
        g.texts[g.text_of_study[queried]],
        g.images,
        [np.array(images_of_study[int(s)]) for s in queried],
        g.study_abnormal[queried],
        g.study_abnormal[g.image_study],
        g.study_positive[queried],
        g.study_positive[g.image_study],
        ks,
        settings.precision_k,
    )


def cxr_clip_protocol(gallery: Gallery, rows: MetricRows, settings: EvaluateSettings) -> None:
    """CXR-CLIP's image->text protocol: Recall@1/5/10 and mean rank over exact-text-deduplicated reports."""
    g = gallery
    study_vectors, study_reports = g.studies
    if settings.cxr_clip_images == "every_frontal":
        queries = every_frontal_image(g.image_views)
    else:
        queries = first_frontal_images(g.image_ids, g.image_study, g.image_views)
    if not len(queries):
        log.warning("cxr_clip: no frontal test image; no rows")
        return
    ranks, gallery_size = cxr_clip_ranks(queries, g.images, g.image_study, study_reports, study_vectors)
    abnormal = g.study_abnormal[g.image_study[queries]]
    for k in PROTOCOL_KS:
        rows.per_query("cxr_clip_i2t", "recall", k, metrics.recall_at_k(ranks, k), abnormal)
    rows.per_query("cxr_clip_i2t", "mean_rank", None, ranks.astype(np.float64), abnormal)
    log.info(
        "cxr_clip: %d query images (%s), %d distinct exact reports; R@10 %.3f, mean rank %.1f",
        len(queries),
        settings.cxr_clip_images,
        gallery_size,
        metrics.recall_at_k(ranks, 10).mean(),
        ranks.mean(),
    )


def first_frontal_of_study(gallery: Gallery) -> np.ndarray:
    """(S,) the gallery row of each study's first frontal image (`first_frontal_images`), -1 where it has none."""
    g = gallery
    first_image = np.full(len(g.study_abnormal), -1, dtype=np.int64)
    frontal = first_frontal_images(g.image_ids, g.image_study, g.image_views)
    first_image[g.image_study[frontal]] = frontal
    return first_image


def five_by_200_studies(gallery: Gallery, settings: EvaluateSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 5x200 sample of a gallery: (sorted study indices, their class 0..4 in FIVE_CLASSES, their first
    frontal image's gallery row). Single-finding studies with a frontal image, `settings.per_class` of each
    class drawn by `settings.sample_seed`: the retrieval protocol and zero-shot 5x200 accuracy
    (`mtcxr.retrieval.zeroshot`) use the same studies, drawn once per gallery."""
    g = gallery
    key = ("5x200", settings.per_class, settings.sample_seed)
    if key not in g.samples:
        first_image = first_frontal_of_study(g)
        five = np.stack([g.labels[name].cast(pl.Float64).fill_null(np.nan).to_numpy() for name in FIVE_CLASSES], axis=1)
        classes = np.where(first_image >= 0, single_finding_class(five), -1)
        studies, counts = sample_5x200(classes, settings.per_class, settings.sample_seed)
        if len(studies):
            log.info("5x200: %d studies (%s)", len(studies), ", ".join(f"{name} {n}" for name, n in counts.items()))
        g.samples[key] = (studies, classes[studies], first_image[studies])
    return g.samples[key]


def label_5x200_protocol(gallery: Gallery, rows: MetricRows, settings: EvaluateSettings) -> None:
    """The 5x200 protocol: single-finding studies, class-hit Precision@1/5/10, image->text and text->image."""
    g = gallery
    studies, study_class, images = five_by_200_studies(g, settings)
    if not len(studies):
        log.warning("label_5x200: no single-finding test study with a frontal image; no rows")
        return
    study_vectors, _ = g.studies
    abnormal = g.study_abnormal[studies]
    query_images, reports = g.images[images], study_vectors[studies]
    for task, queries, keys in (("label_5x200_i2t", query_images, reports), ("label_5x200_t2i", reports, query_images)):
        for k, values in class_hit_precision(queries, keys, study_class, study_class).items():
            rows.per_query(task, "precision", k, values, abnormal)


PROTOCOLS: dict[str, Callable[[Gallery, MetricRows, EvaluateSettings], None]] = {
    "mtcxr": mtcxr_protocol,
    "cxr_clip": cxr_clip_protocol,
    "label_5x200": label_5x200_protocol,
}
# The tasks each protocol writes rows of (a test holds them to what it writes).
PROTOCOL_TASKS: dict[str, tuple[str, ...]] = {
    "mtcxr": ("i2t", "t2i"),
    "cxr_clip": ("cxr_clip_i2t",),
    "label_5x200": ("label_5x200_i2t", "label_5x200_t2i"),
}
