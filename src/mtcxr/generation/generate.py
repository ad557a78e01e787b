"""Stage `generate_reports`: write the report of every test study by retrieving one from the train split.

Queries: every test study with a reference text (`generation.reference`: its findings,
impression, or both joined) and a frontal image; its query image is its first frontal image by
image_id (one query per study, as the CXR-CLIP protocol takes the first frontal image), or where it
has none, its first image of unknown view (a manifest without a view column has only those; never a
lateral). A test study without a usable reference — none, blank, or only de-identification tokens
(`___`, `XXXX`) — or without such an image is a reject with that reason. A collection without sections
(every study's findings and impression empty: a manifest with only a `report` column) has no
section to choose, so its whole report is the reference whatever `generation.reference` says
(`reference_section`); every generation job logs it. `check_generation_inputs` stops a run whose
train split has nothing to retrieve or whose test split nothing to score, before any job where the
dataset is read at parse time (IU X-ray, manifests), else at the first generation job.

Corpus: the train split's reports in the reference section, deduplicated by normalised text
(`mtcxr.data.text.normalize_report`); a distinct report stands for the first train study (by
study_id) that has it, and is retrieved through that study's report embedding. The corpus never
holds a test study's own report: splits are patient-disjoint.

Methods, one table each (the `generated` contract):

- `retrieval` (per backbone x variant): the query's projected image against the corpus's
  projected reports; the output is the top-1 report, or with `generation.choice: consensus` the
  one among the top `generation.k` whose embedding is most similar (mean cosine) to the other
  k-1 — the report the retrieved set agrees on.
- `oracle` (per backbone x variant): among the same top k, the one closest to the reference
  (ROUGE-L): the headroom a perfect re-ranker would have.
- `xtra` (per backbone x X-TRA variant): X-TRA's retrieval-augmented query. The trained
  classifier's attention over the query's 2k memory neighbours (image and report tokens)
  weights their memory embeddings; the query plus that weighted mean, L2-normalised, is
  searched against the corpus.
- `random`, `most_frequent` (no backbone): a train report drawn at random per study (seeded),
  and the train report written most often (by normalised text), for every study.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr.data.text import DEIDENTIFIED, REPORT, SECTIONS, has_sections, normalize_report, section_expr

# mtcxr.retrieval.index (FAISS, torch) is imported where it is used: the pre-flight check imports this module.
from mtcxr.tables import FRONTAL_VIEWS, read_table, write_table

log = logging.getLogger(__name__)

SKIP = "or set `generation: {enabled: false}` to skip report generation"
QUERY_VIEWS = (*FRONTAL_VIEWS, "UNKNOWN")  # views a query image may have; a frontal one is preferred
CHOICES = ("top1", "consensus")
STAGE = "generate_reports"


def reference_texts(studies: pl.DataFrame, section: str) -> pl.Series:
    """The text of `section` of every study by the report-text rule (`mtcxr.data.text`): findings, impression,
    both (findings then impression, an impression identical to the findings kept once), or the whole report."""
    if section not in (*SECTIONS, REPORT):
        raise ValueError(f"generation.reference is {section!r}; choose one of {list(SECTIONS)}")
    return studies.select(section_expr(section).alias("text"))["text"]


def reference_section(studies: pl.DataFrame, section: str) -> str:
    """`section`, or `report` when the collection (`studies`, every split) has no sections to choose from."""
    return section if has_sections(studies) else REPORT


def _log_reference(section: str, used: str) -> None:
    """Say in the job's log when a collection without sections has its whole report as the reference."""
    if used != section:
        log.warning(
            "the dataset has no findings or impression sections (every study's are empty): each study's whole "
            "report is the reference and the retrieved text, in place of generation.reference: %s",
            section,
        )


def _no_usable_text(studies: pl.DataFrame, split: str, section: str) -> tuple[str, str] | None:
    """(why no `split` study can serve under `section`, the fix naming the sections that would); None if some can."""
    rows = studies.filter(pl.col("split") == split)
    if any(unusable_reason(text, section) is None for text in reference_texts(rows, section)):
        return None
    counts = {
        other: sum(unusable_reason(text, other) is None for text in reference_texts(rows, other))
        for other in SECTIONS
        if other != section
    }
    usable = [other for other, n in counts.items() if n]
    have = ", ".join(f"{other}: {n}" for other, n in counts.items()) if section != REPORT else "none"
    fix = f"set generation.reference: {' or '.join(usable)}" if usable else "give the studies report texts"
    return f"none of the {rows.height} {split} studies has a usable {section} text (usable {have})", fix


def check_generation_inputs(studies: pl.DataFrame, images: pl.DataFrame | None, section: str, source: str) -> str:
    """Return the reference section used; raise InputError when generation cannot work on this dataset.

    The train split needs a usable reference text to retrieve, the test split a study with one and
    (where `images` is given) a frontal image to query with. `source` names the dataset in the message.
    """
    from mtcxr.errors import InputError

    used = reference_section(studies, section)
    for split, consequence in (("train", "there is nothing to retrieve a report from"), ("test", "nothing to score")):
        found = _no_usable_text(studies, split, used)
        if found:
            problem, fix = found
            raise InputError(f"report generation cannot run on {source}: {problem}, so {consequence}; {fix}, {SKIP}.")
    if images is not None:
        test = studies.filter(pl.col("split") == "test")
        texts = reference_texts(test, used)
        usable = {study for study, text in zip(test["study_id"], texts) if unusable_reason(text, used) is None}
        frontal = set(images.filter(pl.col("view").is_in(QUERY_VIEWS))["study_id"])
        if not usable & frontal:
            raise InputError(
                f"report generation cannot run on {source}: none of the {len(usable)} test studies with a usable "
                f"{used} text has a frontal ({' or '.join(FRONTAL_VIEWS)}) or unknown-view image to query with, so "
                f"nothing to score; give the test studies frontal images, {SKIP}."
            )
    return used


def unusable_reason(text: str | None, section: str) -> str | None:
    """Why `text` cannot be a reference or a generated report, or None when it can."""
    if text is None or not text.strip():
        if section == REPORT:
            return "no report text"
        return f"no {section} text (generation.reference: {section})"
    if not re.search(r"[A-Za-z0-9]", DEIDENTIFIED.sub(" ", text)):
        return f"the {section} text holds only de-identification tokens (___ / XXXX)"
    return None


def _studies(studies_path: str, section: str) -> tuple[pl.DataFrame, str]:
    """(every study, sorted by study_id; the reference section used: `section`, or `report` without sections)."""
    studies = read_table(studies_path, "studies").sort("study_id")
    return studies, reference_section(studies, section)


def generation_queries(
    images_path: str, studies_path: str, section: str, pixel_rejects: Sequence[str] = ()
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(queries: study_id, image_id, reference — one per usable test study; rejects of the others).

    Images `preprocess_images` rejected (the tables `pixel_rejects`) have no embedding and are never a query.
    Raises InputError when no test study can be a query: every generation job would be wasted.
    """
    from mtcxr.errors import InputError

    everything, used = _studies(studies_path, section)
    _log_reference(section, used)
    section = used
    studies = everything.filter(pl.col("split") == "test")
    studies = studies.with_columns(reference=reference_texts(studies, section))
    images = read_table(images_path, "images").filter((pl.col("split") == "test") & pl.col("view").is_in(QUERY_VIEWS))
    has_frontal = set(images["study_id"])
    rejected = (
        set(pl.concat([read_table(path, "rejects") for path in pixel_rejects])["item"]) if pixel_rejects else set()
    )
    frontal = (
        images.filter(~pl.col("image_id").is_in(list(rejected)))
        .sort([~pl.col("view").is_in(FRONTAL_VIEWS), "image_id"])  # a frontal view first, then by image_id
        .group_by("study_id", maintain_order=True)
        .agg(pl.col("image_id").first())
    )
    studies = studies.join(frontal, on="study_id", how="left")

    def image_reason(study: str, image: str | None) -> str | None:
        if image is not None:
            return None
        if study in has_frontal:
            return "every frontal image was rejected by preprocess_images (see its rejects)"
        return "no frontal image to query with"

    reasons = [
        unusable_reason(text, section) or image_reason(study, image)
        for study, text, image in zip(studies["study_id"], studies["reference"], studies["image_id"])
    ]
    studies = studies.with_columns(reason=pl.Series(reasons, dtype=pl.String))
    rejects = studies.filter(pl.col("reason").is_not_null()).select(
        item=pl.col("study_id"), path=pl.lit(None, pl.String), stage=pl.lit(STAGE), reason=pl.col("reason")
    )
    queries = studies.filter(pl.col("reason").is_null()).select("study_id", "image_id", "reference")
    if queries.is_empty():
        counts = rejects.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
        why = "; ".join(f"{n}: {reason}" for reason, n in counts.iter_rows())
        found = _no_usable_text(everything, "test", section)
        raise InputError(
            f"no test study of {studies_path} can be a report-generation query ({why}), so there would be "
            f"nothing to score; {found[1] if found else 'give them what they lack'}, {SKIP}."
        )
    return queries, rejects


def train_corpus(studies_path: str, section: str) -> pl.DataFrame:
    """Distinct train reports of `section`: study_id (first study with the text), text, and `count` (studies with it)."""
    from mtcxr.errors import InputError

    everything, section = _studies(studies_path, section)
    studies = everything.filter(pl.col("split") == "train")
    studies = studies.with_columns(text=reference_texts(studies, section))
    usable = [unusable_reason(text, section) is None for text in studies["text"]]
    studies = studies.filter(pl.Series(usable, dtype=pl.Boolean)).select("study_id", "text")
    studies = studies.with_columns(key=pl.Series([normalize_report(t) for t in studies["text"]], dtype=pl.String))
    corpus = studies.group_by("key", maintain_order=True).agg(
        pl.col("study_id").first(), pl.col("text").first(), pl.len().alias("count")
    )
    if corpus.is_empty():
        found = _no_usable_text(everything, "train", section)
        fix = found[1] if found else "choose another generation.reference (findings, impression, both)"
        raise InputError(
            f"no train study has a usable {section} text: there is nothing to retrieve a report from; {fix}, {SKIP}."
        )
    return corpus.select("study_id", "text", "count")


def _rows(
    queries: pl.DataFrame,
    corpus: pl.DataFrame,
    picked: np.ndarray,
    ranks: np.ndarray | None,
    method: str,
    backbone: str | None,
    variant: str | None,
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "study_id": queries["study_id"],
            "image_id": queries["image_id"],
            "method": method,
            "backbone": backbone,
            "variant": variant,
            "rank": None if ranks is None else pl.Series(ranks + 1, dtype=pl.Int32),
            "source_study_id": corpus["study_id"].gather(picked),
            "generated": corpus["text"].gather(picked),
            "reference": queries["reference"],
        },
        schema_overrides={"backbone": pl.String, "variant": pl.String, "rank": pl.Int32},
    )


def generate_baselines(
    images_path: str,
    studies_path: str,
    section: str,
    seed: int,
    output: str,
    output_rejects: str,
    pixel_rejects: Sequence[str] = (),
) -> pl.DataFrame:
    """Write the random-report and most-frequent-report baselines, and the rejected test studies."""
    queries, rejects = generation_queries(images_path, studies_path, section, pixel_rejects)
    corpus = train_corpus(studies_path, section)
    rng = np.random.default_rng(seed)
    random_pick = rng.integers(0, corpus.height, size=queries.height)
    frequent = int(np.argmax(corpus["count"].to_numpy()))  # the first of the most frequent, in study_id order
    table = pl.concat(
        [
            _rows(queries, corpus, random_pick, None, "random", None, None),
            _rows(queries, corpus, np.full(queries.height, frequent), None, "most_frequent", None, None),
        ]
    )
    write_table(table, "generated", output)
    write_table(rejects, "rejects", output_rejects)
    log.info(
        "%d test studies queried, %d rejected; train corpus %d distinct %s reports; most frequent (%d studies): %r",
        queries.height,
        rejects.height,
        corpus.height,
        _studies(studies_path, section)[1],  # the section used: `report` for a collection without sections
        int(corpus["count"][frequent]),
        corpus["text"][frequent][:120],
    )
    return table


def top_candidates(query_vectors: np.ndarray, corpus_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the k nearest corpus reports of each query (exact inner product, best first)."""
    k = min(k, len(corpus_vectors))
    from mtcxr.retrieval.index_info import flat_ip_index

    scores, rows = flat_ip_index(corpus_vectors).search(np.ascontiguousarray(query_vectors, dtype=np.float32), k)
    return scores, rows


def consensus_choice(rows: np.ndarray, corpus_vectors: np.ndarray) -> np.ndarray:
    """Per query, the position among its candidates whose embedding is most similar to the others' (ties: best rank)."""
    k = rows.shape[1]
    if k == 1:
        return np.zeros(len(rows), dtype=np.int64)
    candidates = corpus_vectors[rows]  # (Q, k, D)
    similarity = np.einsum("qid,qjd->qij", candidates, candidates)
    agreement = (similarity.sum(axis=2) - np.einsum("qii->qi", similarity)) / (k - 1)
    return np.argmax(agreement, axis=1)


def oracle_choice(rows: np.ndarray, corpus_texts: list[str], references: list[str]) -> np.ndarray:
    """Per query, the position among its candidates with the highest ROUGE-L against the reference (ties: best rank)."""
    from mtcxr.generation.nlg import rouge_l

    keys = [normalize_report(text) for text in corpus_texts]
    picked = np.zeros(len(rows), dtype=np.int64)
    for q, (candidates, reference) in enumerate(zip(rows, references)):
        scores = rouge_l([keys[row] for row in candidates], [normalize_report(reference)] * len(candidates))
        picked[q] = int(np.argmax(scores))
    return picked


def _retrieved(
    queries: pl.DataFrame,
    corpus: pl.DataFrame,
    query_vectors: np.ndarray,
    corpus_vectors: np.ndarray,
    choice: str,
    k: int,
    backbone: str,
    variant: str,
    methods: tuple[str, ...],
) -> pl.DataFrame:
    if choice not in CHOICES:
        raise ValueError(f"generation.choice is {choice!r}; choose one of {list(CHOICES)}")
    _, rows = top_candidates(query_vectors, corpus_vectors, k)
    picked = np.zeros(len(rows), dtype=np.int64) if choice == "top1" else consensus_choice(rows, corpus_vectors)
    tables = [_rows(queries, corpus, rows[np.arange(len(rows)), picked], picked, methods[0], backbone, variant)]
    if "oracle" in methods:
        best = oracle_choice(rows, corpus["text"].to_list(), queries["reference"].to_list())
        tables.append(_rows(queries, corpus, rows[np.arange(len(rows)), best], best, "oracle", backbone, variant))
    return pl.concat(tables)


def _align(queries: pl.DataFrame, ids: np.ndarray, what: str) -> tuple[pl.DataFrame, np.ndarray]:
    """Keep the queries whose image is among `ids`; return them and their rows in `ids`."""
    position = {image_id: row for row, image_id in enumerate(ids)}
    kept = queries.filter(pl.col("image_id").is_in(list(position)))
    if kept.height < queries.height:
        log.warning(
            "%d test query image(s) have no %s; their studies are left out of this method (the scoring "
            "stage names them)",
            queries.height - kept.height,
            what,
        )
    return kept, np.array([position[i] for i in kept["image_id"]], dtype=np.int64)


@dataclass(frozen=True)
class QueryTables:
    """The tables that decide the queries and the corpus: images, studies, and the pixel cache's rejects."""

    images: str
    studies: str
    pixel_rejects: Sequence[str] = ()


@dataclass(frozen=True)
class GenerationSettings:
    """`generation:` settings that change the reports: the reference section, the choice rule, the oracle's k."""

    reference: str
    choice: str
    k: int


def generate_by_retrieval(
    projected_dir: str, tables: QueryTables, settings: GenerationSettings, output: str
) -> pl.DataFrame:
    """Write the `retrieval` and `oracle` reports of one backbone x head variant (its projected folder)."""
    from mtcxr.data.embedded_split import load_projected, read_projected_info

    info = read_projected_info(projected_dir)
    backbone, variant, choice, k = info["backbone"], info["variant"], settings.choice, settings.k
    queries, _ = generation_queries(tables.images, tables.studies, settings.reference, tables.pixel_rejects)
    corpus = train_corpus(tables.studies, settings.reference)
    # Every test view: a query of unknown view needs its embedding (generation_queries picks the images).
    test, train = load_projected(projected_dir, "test", False), load_projected(projected_dir, "train", True)
    queries, image_rows = _align(queries, test.image_ids, "image embedding")
    corpus, corpus_rows = _corpus_rows(corpus, train.study_ids)
    query_vectors = test.image_vectors[image_rows]
    corpus_vectors = train.text_vectors[corpus_rows]
    table = _retrieved(
        queries, corpus, query_vectors, corpus_vectors, choice, k, backbone, variant, ("retrieval", "oracle")
    )
    write_table(table, "generated", output)
    log.info(
        "%s/%s: %d reports generated by %s retrieval over %d distinct train reports (oracle among top %d)",
        backbone,
        variant,
        queries.height,
        choice,
        corpus.height,
        min(k, corpus.height),
    )
    return table


def _corpus_rows(corpus: pl.DataFrame, study_ids: np.ndarray) -> tuple[pl.DataFrame, np.ndarray]:
    position = {study: row for row, study in enumerate(study_ids)}
    kept = corpus.filter(pl.col("study_id").is_in(list(position)))
    if kept.height < corpus.height:
        log.warning(
            "%d distinct train report(s) have no embedding or labels and are not retrievable",
            corpus.height - kept.height,
        )
    return kept, np.array([position[s] for s in kept["study_id"]], dtype=np.int64)


@dataclass(frozen=True)
class XtraFolders:
    """X-TRA's memory folder, the test split's neighbour table and the trained model's folder."""

    memory: str
    test_neighbours: str
    model: str


def generate_by_xtra(
    xtra_dirs: XtraFolders, tables: QueryTables, settings: GenerationSettings, output: str
) -> pl.DataFrame:
    """Write the reports X-TRA's retrieval-augmented queries retrieve (the `xtra` method)."""
    import torch

    from mtcxr.embedding_io import read_embeddings
    from mtcxr.xtra.model import load_classifier, load_memory_tokens
    from mtcxr.xtra.store import read_memory, read_neighbours

    memory_dir, model_dir = xtra_dirs.memory, xtra_dirs.model
    memory = read_memory(memory_dir)
    backbone, variant, choice, k = memory["backbone"], memory["variant"], settings.choice, settings.k
    queries, _ = generation_queries(tables.images, tables.studies, settings.reference, tables.pixel_rejects)
    corpus = train_corpus(tables.studies, settings.reference)
    neighbours = read_neighbours(xtra_dirs.test_neighbours, memory_dir)
    queries, rows = _align(queries, neighbours.image_ids, "X-TRA neighbours")
    model, _ = load_classifier(Path(model_dir) / "xtra.safetensors", Path(model_dir) / "xtra.json")
    tokens = load_memory_tokens(memory_dir, torch.device("cpu"))
    augmented = np.empty((len(rows), neighbours.queries.shape[1]), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(rows), 1024):
            batch = rows[start : start + 1024]
            query = torch.from_numpy(neighbours.queries[batch])
            keys, kinds, states = tokens(
                torch.from_numpy(neighbours.image_rows[batch]), torch.from_numpy(neighbours.report_rows[batch])
            )
            weights = model.attention_weights(query, keys, kinds, states)  # (B, 2k)
            mixed = query + (weights[:, :, None] * keys).sum(dim=1)
            augmented[start : start + len(batch)] = torch.nn.functional.normalize(mixed, dim=-1).numpy()
    report_ids, report_vectors, _ = read_embeddings(Path(memory_dir) / "reports.parquet", "study_id")
    corpus, corpus_rows = _corpus_rows(corpus, report_ids)
    table = _retrieved(queries, corpus, augmented, report_vectors[corpus_rows], choice, k, backbone, variant, ("xtra",))
    write_table(table, "generated", output)
    log.info("%s/%s: %d reports generated by X-TRA's augmented queries", backbone, variant, queries.height)
    return table
