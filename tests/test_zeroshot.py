"""Zero-shot classification with text prompts (mtcxr.retrieval.zeroshot): prompts from the config, the score,
per-label and macro ROC-AUC, 5x200 accuracy, evaluate's tables, summarize's section and the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from mtcxr.config import ConfigError, run_config, zeroshot_prompts
from mtcxr.embedding_io import write_embeddings
from mtcxr.models.embed import prompt_rows
from mtcxr.models.heads import ProjectionHeads, save_heads
from mtcxr.models.project import EmbeddingInputs, project_embeddings
from mtcxr.retrieval.evaluate import evaluate_retrieval
from mtcxr.retrieval.index import build_index
from mtcxr.retrieval.protocols import FIVE_CLASSES, EvaluateSettings, Gallery, MetricRows
from mtcxr.retrieval.zeroshot import (
    Prompts,
    prompt_means,
    prompt_scores,
    targets_and_mask,
    zeroshot_classification,
)
from mtcxr.summary.figures import zeroshot_auc_figure
from mtcxr.summary.summarize import SummaryInputs, SummaryOutputs, summarize
from mtcxr.tables import CHEXPERT_LABELS, CONTRACTS, ZEROSHOT_OBSERVATIONS, read_table, write_table

from tiny_tree import write_tiny_tree

REPO = Path(__file__).resolve().parents[1]
L = len(ZEROSHOT_OBSERVATIONS)
DIM = L + 3  # one axis per observation, one every image shares, two of noise


# --- helpers ------------------------------------------------------------------------------------------


def basis_prompts(negative_sign: float = -1.0, extra: int = 0) -> Prompts:
    """Positive prompt of observation j: e_j; negative: `negative_sign` * e_j. `extra` adds a second positive
    prompt per observation (e_j again, so the ensemble mean is unchanged)."""
    ids, observations, sides, vectors = [], [], [], []
    eye = np.eye(DIM, dtype=np.float32)
    for j, name in enumerate(ZEROSHOT_OBSERVATIONS):
        for side, vector, count in (("positive", eye[j], 1 + extra), ("negative", negative_sign * eye[j], 1)):
            for i in range(count):
                ids.append(f"{name}/{side}/{i}")
                observations.append(name)
                sides.append(side)
                vectors.append(vector)
    return Prompts(
        np.array(ids), np.array(observations, dtype=object), np.array(sides, dtype=object), np.stack(vectors)
    )


def gallery_of(images: np.ndarray, labels: np.ndarray) -> Gallery:
    """A gallery of one PA image per study; `labels` (S, 14) holds 1 / 0 / -1 / NaN (not mentioned) per CheXpert label."""
    n = len(images)
    table = pl.DataFrame(
        {
            "study_id": [f"s{i:04d}" for i in range(n)],
            **{
                name: pl.Series(labels[:, j], dtype=pl.Float64).fill_nan(None).cast(pl.Int8)
                for j, name in enumerate(CHEXPERT_LABELS)
            },
        }
    )
    abnormal = ~(labels[:, CHEXPERT_LABELS.index("no_finding")] == 1)
    return Gallery(
        image_ids=np.array([f"i{i:04d}" for i in range(n)]),
        images=images.astype(np.float32),
        image_study=np.arange(n),
        image_views=np.array(["PA"] * n, dtype=object),
        texts=images.astype(np.float32),
        text_of_study=np.arange(n),
        first_study=np.arange(n),
        labels=table,
        study_abnormal=abnormal,
        study_positive=labels == 1,
        read_studies=lambda: (images, [""] * n),
    )


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels): each image the normalised sum of its positive observations' axes and a shared axis,
    plus noise; labels 1 or not mentioned, and a block of single-finding studies of each of the five classes."""
    rng = np.random.default_rng(seed)
    positive = rng.random((n, L)) < 0.3
    positive[: 5 * 6] = False
    for c, name in enumerate(FIVE_CLASSES):  # six single-finding studies per 5x200 class
        positive[6 * c : 6 * (c + 1), ZEROSHOT_OBSERVATIONS.index(name)] = True
    images = np.zeros((n, DIM))
    images[:, :L] = positive
    images[:, L] = 1.0
    images[:, L + 1 :] = rng.normal(0, 0.01, (n, 2))
    images += rng.normal(0, 0.005, images.shape)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    labels = np.full((n, len(CHEXPERT_LABELS)), np.nan)
    for j, name in enumerate(ZEROSHOT_OBSERVATIONS):
        labels[positive[:, j], CHEXPERT_LABELS.index(name)] = 1
    labels[~positive.any(axis=1), 0] = 1  # No Finding
    return images, labels


SETTINGS = EvaluateSettings(n_boot=200, seed=0, per_class=200, sample_seed=0)


# --- the score and the metrics ---------------------------------------------------------------------------


def test_images_that_match_their_labels_score_auc_and_accuracy_one():
    images, labels = separable(240, seed=1)
    rows = MetricRows(SETTINGS.n_boot, SETTINGS.seed)
    per_observation = zeroshot_classification(gallery_of(images, labels), basis_prompts(), rows, SETTINGS)
    assert [row["observation"] for row in per_observation] == list(ZEROSHOT_OBSERVATIONS)
    assert all(row["value"] == 1.0 and row["ci_low"] == 1.0 and row["ci_high"] == 1.0 for row in per_observation)
    assert all(row["n_images"] == 240 and 0 < row["n_positive"] < 240 for row in per_observation)
    summary = {row["metric"]: row for row in rows.summary}
    assert summary["macro_auc"]["task"] == "zeroshot_classification"
    assert summary["macro_auc"]["value"] == 1.0 and summary["macro_auc"]["n_queries"] == 240
    accuracy = summary["accuracy_5x200"]
    assert accuracy["value"] == 1.0 and accuracy["ci_low"] == 1.0 and accuracy["n_queries"] >= 30
    # Per-query values behind the accuracy, for the across-seed bootstrap in summarize.
    (queries,) = rows.queries
    assert queries["value"].to_list() == [1.0] * accuracy["n_queries"]


def test_the_score_is_positive_minus_negative_similarity_and_ensembles_are_normalised():
    prompts = basis_prompts(negative_sign=1.0, extra=2)  # negative prompt e_j too: every score is 0
    positive, negative = prompt_means(prompts)
    assert np.allclose(np.linalg.norm(positive, axis=1), 1.0) and np.allclose(positive, negative)
    image = np.zeros((1, DIM))
    image[0, 0] = 1.0
    assert np.allclose(prompt_scores(image, positive, negative), 0.0)
    # Two positive prompts of one observation, e_0 and e_1: their mean normalised, (e_0 + e_1) / sqrt 2.
    two = Prompts(
        np.array(["a/positive/0", "a/positive/1", "a/negative/0"]),
        np.array(["a"] * 3, dtype=object),
        np.array(["positive", "positive", "negative"], dtype=object),
        np.eye(3, dtype=np.float32),
    )
    pos, neg = prompt_means(two, ("a",))
    assert np.allclose(pos, [[2**-0.5, 2**-0.5, 0]]) and np.allclose(neg, [[0, 0, 1]])
    assert np.allclose(prompt_scores(np.array([[1.0, 0, 0]]), pos, neg), [[2**-0.5]])
    with pytest.raises(ValueError, match="no positive prompt of b"):
        prompt_means(two, ("a", "b"))


def test_random_prompts_score_near_chance():
    rng = np.random.default_rng(7)
    n = 400
    images = rng.normal(size=(n, DIM))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    labels = np.where(rng.random((n, len(CHEXPERT_LABELS))) < 0.3, 1.0, 0.0)
    vectors = rng.normal(size=(2 * L, DIM)).astype(np.float32)
    prompts = Prompts(
        np.array([f"{name}/{side}/0" for side in ("positive", "negative") for name in ZEROSHOT_OBSERVATIONS]),
        np.array(list(ZEROSHOT_OBSERVATIONS) * 2, dtype=object),
        np.array(["positive"] * L + ["negative"] * L, dtype=object),
        vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
    )
    rows = MetricRows(100, 0)
    per_observation = zeroshot_classification(gallery_of(images, labels), prompts, rows, SETTINGS)
    macro = next(row for row in rows.summary if row["metric"] == "macro_auc")
    assert abs(macro["value"] - 0.5) < 0.1, macro
    assert macro["ci_low"] < macro["value"] < macro["ci_high"]
    assert macro["value"] == pytest.approx(np.mean([row["value"] for row in per_observation]))


def test_an_observation_with_one_class_is_left_out_of_the_macro_auc(caplog):
    images, labels = separable(120, seed=2)
    fracture = CHEXPERT_LABELS.index("fracture")
    labels[:, fracture] = np.where(labels[:, fracture] == 1, -1, 0)  # uncertain or negative: no positive left
    rows = MetricRows(SETTINGS.n_boot, SETTINGS.seed)
    with caplog.at_level("WARNING", logger="mtcxr.retrieval.zeroshot"):
        per_observation = zeroshot_classification(gallery_of(images, labels), basis_prompts(), rows, SETTINGS)
    assert "fracture" not in {row["observation"] for row in per_observation} and len(per_observation) == L - 1
    assert "left out of the AUCs (not both classes among the 120 test images): Fracture" in caplog.text
    macro = next(row for row in rows.summary if row["metric"] == "macro_auc")
    assert macro["value"] == 1.0
    # Counted as positive (`ones`), the uncertain fractures make the class present again.
    ones = EvaluateSettings(n_boot=20, zeroshot_uncertain="ones")
    counted = zeroshot_classification(gallery_of(images, labels), basis_prompts(), MetricRows(20, 0), ones)
    assert "fracture" in {row["observation"] for row in counted}


def test_uncertain_and_unmentioned_labels_count_as_xtra_counts_them():
    values = np.array([[1.0, 0.0, -1.0, np.nan]])
    targets, mask = targets_and_mask(values, "ignore")
    assert targets.tolist() == [[1, 0, 0, 0]] and mask.tolist() == [[1, 1, 0, 1]]
    assert targets_and_mask(values, "zeros")[0].tolist() == [[1, 0, 0, 0]]
    assert targets_and_mask(values, "ones")[0].tolist() == [[1, 0, 1, 0]]
    assert targets_and_mask(values, "ones")[1].min() == 1
    with pytest.raises(ValueError, match="evaluate.zeroshot_classification.uncertain"):
        targets_and_mask(values, "maybe")
    with pytest.raises(ValueError, match="evaluate.zeroshot_classification.uncertain is 'maybe'"):
        EvaluateSettings(zeroshot_uncertain="maybe")


# --- prompts from the config ---------------------------------------------------------------------------------


def resolve(**evaluate) -> dict:
    return run_config(
        REPO / "config.yaml",
        [],
        {"evaluate": {"zeroshot_classification": evaluate}},
        REPO / "workflow/schemas/config.schema.yaml",
    )


def test_prompts_default_to_chexzero_pairs_with_overrides():
    section = resolve()["evaluate"]["zeroshot_classification"]
    prompts = zeroshot_prompts(section)
    assert list(prompts) == list(ZEROSHOT_OBSERVATIONS) and "no_finding" not in prompts
    assert prompts["pleural_effusion"] == {"positive": ["pleural effusion"], "negative": ["no pleural effusion"]}
    assert prompts["enlarged_cardiomediastinum"]["negative"] == ["no enlarged cardiomediastinum"]
    section = resolve(
        positive=["{finding}", "findings of {finding}"],
        observations={"edema": {"positive": ["pulmonary edema", "edema"]}},
    )["evaluate"]["zeroshot_classification"]
    prompts = zeroshot_prompts(section)
    assert prompts["edema"] == {"positive": ["pulmonary edema", "edema"], "negative": ["no edema"]}
    assert prompts["atelectasis"]["positive"] == ["atelectasis", "findings of atelectasis"]
    columns = prompt_rows(prompts)
    assert columns["prompt_id"][:3] == [
        "enlarged_cardiomediastinum/positive/0",
        "enlarged_cardiomediastinum/positive/1",
        "enlarged_cardiomediastinum/negative/0",
    ]
    assert len(columns["text"]) == 3 * L and set(columns["side"]) == {"positive", "negative"}


@pytest.mark.parametrize(
    ("evaluate", "key"),
    [
        (
            {"observations": {"pneumonitis": {"positive": ["x"]}}},
            "evaluate.zeroshot_classification.observations.pneumonitis",
        ),
        (
            {"observations": {"no_finding": {"positive": ["x"]}}},
            "evaluate.zeroshot_classification.observations.no_finding",
        ),
        ({"observations": {"edema": {"positive": []}}}, "evaluate.zeroshot_classification.observations.edema.positive"),
        (
            {"observations": {"edema": {"negative": ["  "]}}},
            "evaluate.zeroshot_classification.observations.edema.negative",
        ),
        ({"positive": []}, "evaluate.zeroshot_classification.positive"),
        ({"negative": ["no finding here"]}, "evaluate.zeroshot_classification.negative.0"),
        ({"uncertain": "maybe"}, "evaluate.zeroshot_classification.uncertain"),
    ],
)
def test_bad_prompt_config_is_one_line_naming_the_key(evaluate, key):
    with pytest.raises(ConfigError) as error:
        resolve(**evaluate)
    message = str(error.value)
    assert key in message and "\n" not in message, message


# --- through the stages: evaluate's tables, summarize, the figure ---------------------------------------------


def test_evaluate_writes_zeroshot_rows_from_the_backbones_prompts(tmp_path):
    """embed_prompts' table -> evaluate, which projects it through the variant's text head -> rows and table."""
    images, labels = separable(60, seed=3)
    positive = [[name for j, name in enumerate(CHEXPERT_LABELS) if labels[i, j] == 1] for i in range(60)]
    paths = write_tiny_tree(
        tmp_path, ["test"] * 50 + ["train"] * 10, [f"r{i}" for i in range(60)], images, images, positive
    )
    prompts = basis_prompts()
    columns = prompt_rows({name: {"positive": ["p"], "negative": ["n"]} for name in ZEROSHOT_OBSERVATIONS})
    assert columns["prompt_id"] == list(prompts.ids)
    write_embeddings(
        tmp_path / "prompts.parquet",
        "prompt_id",
        columns["prompt_id"],
        prompts.vectors,
        {"spec": "demo", "normalized": True},
        {name: columns[name] for name in ("observation", "side", "text")},
    )
    save_heads(  # untrained: the identity on unit vectors, so the prompts keep their basis directions
        ProjectionHeads(DIM, 4, seed=0),
        tmp_path / "h.safetensors",
        tmp_path / "h.json",
        {"variant": "zeroshot", "trained": False, "losses": {}},
    )
    inputs = EmbeddingInputs(
        [paths["image_embeddings"]], paths["text_embeddings"], paths["images"], paths["studies"], paths["labels"]
    )
    project_embeddings(
        inputs,
        str(tmp_path / "h.safetensors"),
        str(tmp_path / "h.json"),
        str(tmp_path / "projected"),
        {"backbone": "demo", "variant": "zeroshot", "seed": 0},
    )
    build_index(str(tmp_path / "projected"), str(tmp_path / "index"))
    metrics = evaluate_retrieval(
        str(tmp_path / "index"),
        paths["labels"],
        str(tmp_path / "m.parquet"),
        str(tmp_path / "q.parquet"),
        settings=EvaluateSettings(n_boot=30, protocols=("cxr_clip",)),
        prompts=str(tmp_path / "prompts.parquet"),
        output_zeroshot=str(tmp_path / "z.parquet"),
    )
    zeroshot = metrics.filter(pl.col("task") == "zeroshot_classification")
    assert dict(zeroshot.select("metric", "value").iter_rows()) == {"macro_auc": 1.0, "accuracy_5x200": 1.0}
    n_queries = dict(zeroshot.select("metric", "n_queries").iter_rows())
    assert n_queries["macro_auc"] == 50 and 30 <= n_queries["accuracy_5x200"] < 50  # every test image; the 5x200 ones
    table = read_table(tmp_path / "z.parquet", "zeroshot_auc")
    assert table.height >= 10 and (table["value"] == 1.0).all() and set(table["variant"]) == {"zeroshot"}


def zeroshot_run(folder: Path, variant: str, seed: int | None, macro: float, accuracy: np.ndarray, auc: dict) -> tuple:
    """One run's metrics, per-query and zeroshot_auc tables, as evaluate writes them."""
    run = {"backbone": "demo", "variant": variant, "seed": seed, "n_seeds": None if seed is None else 1}
    rows = [
        {
            **run,
            "task": "zeroshot_classification",
            "metric": "macro_auc",
            "value": macro,
            "ci_low": macro - 0.1,
            "ci_high": macro + 0.05,
            "n_queries": 80,
        },
        {
            **run,
            "task": "zeroshot_classification",
            "metric": "accuracy_5x200",
            "value": accuracy.mean(),
            "ci_low": 0.1,
            "ci_high": 0.9,
            "n_queries": len(accuracy),
        },
    ]
    name = f"{folder}/{variant}{seed}"
    write_table(
        pl.DataFrame([{c: row.get(c) for c in CONTRACTS["metrics"]} for row in rows], schema=CONTRACTS["metrics"]),
        "metrics",
        f"{name}.parquet",
    )
    queries = pl.DataFrame(
        {
            "task": "zeroshot_classification",
            "metric": "accuracy_5x200",
            "k": None,
            "query": np.arange(len(accuracy)),
            "abnormal": True,
            "value": accuracy,
        },
        schema=CONTRACTS["metric_queries"],
    )
    write_table(queries, "metric_queries", f"{name}.queries.parquet")
    per_observation = [
        {
            **run,
            "observation": observation,
            "value": value,
            "ci_low": value - 0.1,
            "ci_high": min(1.0, value + 0.1),
            "n_images": 80,
            "n_positive": 20,
        }
        for observation, value in auc.items()
    ]
    write_table(
        pl.DataFrame(per_observation, schema=CONTRACTS["zeroshot_auc"]), "zeroshot_auc", f"{name}.zeroshot_auc.parquet"
    )
    return f"{name}.parquet", f"{name}.queries.parquet", f"{name}.zeroshot_auc.parquet"


def test_summarize_gathers_zeroshot_rows_across_seeds(tmp_path):
    runs = [
        zeroshot_run(
            tmp_path, "zeroshot", None, 0.62, np.array([1.0, 0.0, 0.0, 1.0]), {"edema": 0.7, "cardiomegaly": 0.55}
        ),
        zeroshot_run(
            tmp_path, "multitask", 0, 0.70, np.array([1.0, 1.0, 0.0, 1.0]), {"edema": 0.8, "cardiomegaly": 0.6}
        ),
        zeroshot_run(
            tmp_path, "multitask", 1, 0.74, np.array([1.0, 1.0, 1.0, 1.0]), {"edema": 0.9, "cardiomegaly": 0.6}
        ),
    ]
    out = {name: str(tmp_path / name) for name in ("s.parquet", "s.csv", "s.md", "p.csv", "z.csv")}
    summary = summarize(
        SummaryInputs(
            metrics=[m for m, _, _ in runs], queries=[q for _, q, _ in runs], zeroshot=[z for _, _, z in runs]
        ),
        SummaryOutputs(out["s.parquet"], out["s.csv"], out["s.md"], out["p.csv"], zeroshot=out["z.csv"]),
        n_boot=200,
    )
    across = summary.filter((pl.col("variant") == "multitask") & (pl.col("n_seeds") == 2))
    macro = across.filter(pl.col("metric") == "macro_auc").row(0, named=True)
    assert macro["value"] == pytest.approx(0.72) and macro["sd"] == pytest.approx(np.std([0.70, 0.74], ddof=1))
    accuracy = across.filter(pl.col("metric") == "accuracy_5x200").row(0, named=True)
    assert accuracy["value"] == pytest.approx(0.875) and accuracy["ci_low"] <= 0.875 <= accuracy["ci_high"]
    table = pl.read_csv(out["z.csv"])
    assert table.height == 2 + 2 + 2 + 2  # three runs' two observations, and multitask's across-seed pair
    edema = table.filter((pl.col("n_seeds") == 2) & (pl.col("observation") == "edema")).row(0, named=True)
    assert edema["value"] == pytest.approx(0.85) and edema["seed"] is None and edema["ci_low"] is None
    markdown = Path(out["s.md"]).read_text()
    assert "## Zero-shot classification (text prompts)" in markdown
    assert "| demo | zeroshot | 0.620 [0.520, 0.670] | 0.500 [0.100, 0.900] |" in markdown
    assert f"| demo | multitask | 0.720 ± {np.std([0.70, 0.74], ddof=1):.3f} | 0.875 ± 0.177 |" in markdown


def test_zeroshot_figure_fits_the_window_and_says_when_empty(tmp_path, caplog):
    rows = [
        {
            "backbone": backbone,
            "variant": variant,
            "seed": seed,
            "n_seeds": 1,
            "observation": name,
            "value": 0.5 + 0.03 * j,
            "ci_low": 0.4,
            "ci_high": 0.9,
            "n_images": 80,
            "n_positive": 9,
        }
        for backbone in ("demo", "demo_ft", "biomedclip")
        for variant in ("clip", "clip_bce", "clip_supcon", "multitask", "xtra")
        for seed in (0, 1, 2)
        for j, name in enumerate(ZEROSHOT_OBSERVATIONS)
    ]
    auc = pl.DataFrame(rows, schema=CONTRACTS["zeroshot_auc"])
    across = auc.group_by("backbone", "variant", "observation").agg(
        pl.col("value").mean(), pl.col("n_images").first(), pl.col("n_positive").first()
    )
    auc = pl.concat(
        [
            auc,
            across.with_columns(seed=None, n_seeds=3, ci_low=None, ci_high=None, sd=0.01)
            .select(auc.columns)
            .cast(auc.schema),
        ]
    )
    summary = pl.DataFrame(schema=CONTRACTS["metrics"])
    zeroshot_auc_figure(auc, summary, str(tmp_path / "z.png"))
    width, height = Image.open(tmp_path / "z.png").size
    assert 1000 < width <= 1600 and 600 < height <= 1000
    zeroshot_auc_figure(auc.clear(), summary, str(tmp_path / "empty.png"))
    assert "no observation with both classes" in caplog.text
    assert Image.open(tmp_path / "empty.png").size[1] < 400
