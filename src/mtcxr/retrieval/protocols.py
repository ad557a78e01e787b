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
"""

from __future__ import annotations

import logging

import numpy as np

from mtcxr import metrics
from mtcxr.tables import FRONTAL_VIEWS

log = logging.getLogger(__name__)

PROTOCOLS = ("mtcxr", "cxr_clip", "label_5x200")
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
