"""End to end: the whole workflow through Snakemake itself on the tiny config."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from tiny_workflow import REPO, run_snakemake, snakemake

from mtcxr.embedding_io import read_embeddings
from mtcxr.tables import read_table

SUMMARY_COLUMNS = [
    "backbone",
    "variant",
    "seed",
    "task",
    "metric",
    "k",
    "value",
    "ci_low",
    "ci_high",
    "sd",
    "n_seeds",
    "n_queries",
]


@pytest.mark.slow
def test_every_artifact_is_written(tiny_results):
    r = tiny_results
    studies = read_table(r / "data/studies.parquet", "studies")
    images = read_table(r / "data/images.parquet", "images")
    labels = read_table(r / "labels/labels.parquet", "labels")
    assert studies.height == 160 and set(studies["split"]) == {"train", "validate", "test"}
    assert labels.height == 160 and images.filter(pl.col("view").is_in(["PA", "AP"])).height == 160
    assert read_table(r / "data/rejects.parquet", "rejects").height == 0
    pixels = pl.read_parquet(r / "data/pixels/shard-0.parquet")
    assert sorted(pixels["image_id"]) == sorted(images["image_id"])
    assert pixels["height"].min() == 64 and pixels["width"].min() == 64

    ids, vectors, meta = read_embeddings(r / "embeddings/demo/images-0.parquet", "image_id")
    assert len(ids) == images.height and vectors.shape == (images.height, 32)
    assert meta["normalized"] and meta["spec"] == "demo" and meta["dim"] == 32
    assert abs(float((vectors**2).sum(axis=1).mean()) - 1.0) < 1e-4
    text_ids, _, _ = read_embeddings(r / "embeddings/demo/texts.parquet", "study_id")
    assert sorted(text_ids) == sorted(studies["study_id"])

    assert (r / "models/demo_backbone/open_clip_config.json").is_file()
    for variant, seeds in (("zeroshot", [0]), ("multitask", [0, 1])):
        for seed in seeds:
            assert (r / f"models/demo/{variant}/seed{seed}/head.safetensors").is_file()
            assert (r / f"index/demo/{variant}/seed{seed}/images.faiss").is_file()
            assert (r / f"index/demo/{variant}/seed{seed}/texts.faiss").is_file()
    assert not (r / "models/demo/zeroshot/seed1").exists()  # untrained: one run
    assert (r / "models/demo/multitask/seed0/head.safetensors").read_bytes() != (
        r / "models/demo/multitask/seed1/head.safetensors"
    ).read_bytes()
    history = pl.read_parquet(r / "models/demo/multitask/seed0/history.parquet")
    assert history.height == 3 and {"train_clip", "train_supcon", "train_bce"} <= set(history.columns)
    # train.select: best keeps the epoch with the lowest validation loss, marked and named in head.json.
    kept = int(history["validate_total"].arg_min())
    assert history["chosen"].to_list() == [epoch == kept for epoch in range(3)]
    head = json.loads((r / "models/demo/multitask/seed0/head.json").read_text())
    assert head["chosen_epoch"] == kept and head["seed"] == 0
    assert (r / "figures/training_demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = pl.read_csv(r / "metrics/summary.csv")
    assert summary.columns == SUMMARY_COLUMNS
    assert set(summary["variant"].drop_nulls()) == {"zeroshot", "multitask", "xtra"}
    recall = summary.filter(
        (pl.col("task") == "i2t") & (pl.col("metric") == "recall") & (pl.col("n_seeds").fill_null(1) == 1)
    )
    assert sorted(recall["k"].unique()) == [1, 5, 10]
    assert ((recall["ci_low"] <= recall["value"]) & (recall["value"] <= recall["ci_high"])).all()
    assert summary.filter(pl.col("metric") == "silhouette")["k"].is_null().all()
    n_test_frontal = images.filter((pl.col("split") == "test") & pl.col("view").is_in(["PA", "AP"])).height
    assert set(recall["n_queries"]) == {n_test_frontal}
    assert "| zeroshot |" in (r / "metrics/summary.md").read_text()
    for figure in ("figures/tsne_demo.png", "figures/recall_at_k.png"):
        assert (r / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tiny_study_is_informative(tiny_results):
    """The tiny study can catch a wrong metric: its embeddings are spread, zero-shot retrieval is well above
    chance and retrieval-based generation returns many different reports, not one for every study."""
    r = tiny_results
    summary = pl.read_csv(r / "metrics/summary.csv")

    def value(backbone: str, variant: str, task: str, metric: str, k: int | None = None) -> dict:
        rows = summary.filter(
            (pl.col("backbone") == backbone)
            & (pl.col("variant") == variant)
            & (pl.col("task") == task)
            & (pl.col("metric") == metric)
            & (pl.col("k").is_null() if k is None else pl.col("k") == k)
            & (pl.col("n_seeds").fill_null(1) == 1)  # zeroshot's one run, or a trained variant's first seed
            & (pl.col("seed").fill_null(0) == 0)
        )
        assert rows.height == 1, (backbone, variant, task, metric, k)
        return rows.row(0, named=True)

    for backbone in ("demo", "demo_ft"):
        assert value(backbone, "zeroshot", "embeddings", "image_mean_cosine")["value"] < 0.9
        assert value(backbone, "zeroshot", "embeddings", "report_mean_cosine")["value"] < 0.9
    reports = pl.read_parquet(r / "index/demo/zeroshot/seed0/texts.parquet").height
    recall5 = value("demo", "zeroshot", "i2t", "recall", 5)
    assert recall5["value"] > 1.5 * 5 / reports, (recall5, reports)
    # The whole ranking, not one cut-off: a random ranking's mean rank is (n + 1) / 2.
    mean_rank = value("demo", "zeroshot", "cxr_clip_i2t", "mean_rank")
    assert mean_rank["ci_high"] < (reports + 1) / 2, (mean_rank, reports)
    assert value("demo", "zeroshot", "i2t", "balanced_precision", 5)["ci_low"] > 0.5
    assert "collapsed" not in (r / "metrics/summary.md").read_text()

    for method in ("demo/zeroshot/retrieval", "demo/multitask/retrieval"):
        generated = pl.read_parquet(r / f"generation/{method}.parquet").filter(pl.col("method") == "retrieval")
        assert generated.height >= 40 and generated["generated"].n_unique() >= 8, method


@pytest.mark.slow
def test_seeds_protocols_and_findings(tiny_results):
    """train.seeds [0, 1]: per-seed rows, across-seed mean/sd, the pooled paired test; every protocol's rows."""
    r = tiny_results
    summary = read_table(r / "metrics/summary.parquet", "metrics").filter(pl.col("backbone") == "demo")
    recall = summary.filter(
        (pl.col("backbone") == "demo")
        & (pl.col("variant") == "multitask")
        & (pl.col("task") == "i2t")
        & (pl.col("metric") == "recall")
        & (pl.col("k") == 10)
    )
    per_seed = recall.filter(pl.col("n_seeds") == 1).sort("seed")
    across = recall.filter(pl.col("n_seeds") == 2).row(0, named=True)
    assert per_seed["seed"].to_list() == [0, 1] and across["seed"] is None
    assert across["value"] == pytest.approx(per_seed["value"].mean())
    assert across["sd"] == pytest.approx(per_seed["value"].std())
    assert across["ci_low"] <= across["value"] <= across["ci_high"]
    paired = pl.read_csv(r / "metrics/paired_vs_zeroshot.csv").filter(
        (pl.col("variant") == "multitask") & (pl.col("backbone") == "demo")
    )
    assert set(paired["method"]) == {"query_bootstrap", "seed_query_bootstrap"}
    assert paired.filter(pl.col("method") == "seed_query_bootstrap")["n_seeds"].unique().to_list() == [2]

    images = read_table(r / "data/images.parquet", "images")
    frontal_test = images.filter((pl.col("split") == "test") & pl.col("view").is_in(["PA", "AP"]))
    cxr_clip = summary.filter((pl.col("task") == "cxr_clip_i2t") & (pl.col("variant") == "zeroshot"))
    assert sorted(cxr_clip.filter(pl.col("metric") == "recall")["k"].to_list()) == [1, 5, 10]
    assert set(cxr_clip["n_queries"]) == {frontal_test["study_id"].n_unique()}  # one image per study
    assert cxr_clip.filter(pl.col("metric") == "mean_rank")["value"][0] >= 1
    five = summary.filter(pl.col("task").str.starts_with("label_5x200_") & (pl.col("variant") == "zeroshot"))
    assert set(five["task"]) == {"label_5x200_i2t", "label_5x200_t2i"} and set(five["metric"]) == {"precision"}
    assert five["value"].is_between(0, 1).all()
    log = (r / "logs/evaluate/demo/zeroshot/seed0.log").read_text()
    assert "fewer than 200; all are used" in log  # the tiny test split has far fewer than 5 x 200

    findings = pl.read_csv(r / "metrics/finding_precision.csv").filter(pl.col("backbone") == "demo")
    assert {"i2t", "t2i"} <= set(findings["task"]) and findings["value"].is_between(0, 1).all()
    assert set(findings.filter(pl.col("n_seeds") == 2)["variant"]) == {"multitask", "xtra"}  # the trained ones
    assert (r / "figures/finding_precision_demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (r / "metrics/summary.md").read_text()
    for text in (
        "mean ± standard deviation over 2 training seeds",
        "seed-and-query bootstrap",
        "### Published protocols",
        "### Clinical precision by query finding",
    ):
        assert text in markdown


@pytest.mark.slow
def test_finetuned_backbone_is_a_backbone_like_any_other(tiny_results):
    """tiny.yaml fine-tunes demo's last image block (demo_ft): its folder loads as a local-dir backbone
    and its variants (zeroshot, multitask) sit in the summary beside demo's."""
    r = tiny_results
    folder = r / "models/finetuned/demo_ft"
    facts = json.loads((folder / "finetune.json").read_text())
    assert facts["image_blocks"] == 1 and facts["text_layers"] == 0 and facts["trainable_parameters"] > 0
    assert (folder / "open_clip_model.safetensors").is_file() and not (
        r / "checkpoints/finetune_backbone/demo_ft.pt"
    ).exists()
    _, vectors, meta = read_embeddings(r / "embeddings/demo_ft/texts.parquet", "study_id")
    assert meta["spec"] == f"local-dir:{folder}"
    summary = read_table(r / "metrics/summary.parquet", "metrics")
    ft = summary.filter(pl.col("backbone") == "demo_ft")
    assert set(ft["variant"]) == {"zeroshot", "multitask"}
    assert ft.filter((pl.col("task") == "i2t") & (pl.col("metric") == "recall"))["value"].is_between(0, 1).all()
    assert "## Backbone `demo_ft`" in (r / "metrics/summary.md").read_text()
    assert (r / "figures/tsne_demo_ft.png").is_file()


@pytest.mark.slow
def test_xtra_results(tiny_results):
    r = tiny_results
    summary = pl.read_csv(r / "metrics/summary.csv")
    macro = summary.filter((pl.col("metric") == "macro_auc") & pl.col("task").str.starts_with("labels_"))
    assert sorted(macro["task"]) == ["labels_knn", "labels_query_only", "labels_xtra"]
    assert set(macro["variant"]) == {"xtra"}
    assert ((macro["ci_low"] <= macro["value"]) & (macro["value"] <= macro["ci_high"])).all()
    table = pl.read_csv(r / "metrics/xtra_auc.csv")
    assert set(table["method"]) == {"xtra", "query_only", "knn", "xtra - query_only", "knn - query_only"}
    assert table.filter(pl.col("label") != "macro")["value"].is_between(0, 1).all()
    history = pl.read_parquet(r / "xtra/demo/xtra/model/history.parquet")
    assert history.group_by("method").agg(pl.col("chosen").sum())["chosen"].to_list() == [1, 1]
    assert (r / "figures/xtra_auc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## X-TRA: multi-label classification" in (r / "metrics/summary.md").read_text()


@pytest.mark.slow
def test_zeroshot_classification_results(tiny_results):
    """Zero-shot classification with text prompts for every backbone x variant x seed: its rows in summary.csv,
    the per-observation table, the figure and the section of summary.md."""
    r = tiny_results
    summary = pl.read_csv(r / "metrics/summary.csv").filter(pl.col("task") == "zeroshot_classification")
    per_run = summary.filter(pl.col("n_seeds").fill_null(1) == 1)
    runs = {
        ("demo", "zeroshot", None),
        *(("demo", variant, seed) for variant in ("multitask", "xtra") for seed in (0, 1)),
        ("demo_ft", "zeroshot", None),
        ("demo_ft", "multitask", 0),
        ("demo_ft", "multitask", 1),
    }
    for metric in ("macro_auc", "accuracy_5x200"):
        rows = per_run.filter(pl.col("metric") == metric)
        assert set(rows.select("backbone", "variant", "seed").iter_rows()) == runs, metric
        assert rows.height == len(runs) and rows["value"].is_between(0, 1).all(), rows
        assert (rows["ci_low"] <= rows["value"]).all() and (rows["value"] <= rows["ci_high"]).all()
    multitask = summary.filter(
        (pl.col("variant") == "multitask") & (pl.col("metric") == "macro_auc") & (pl.col("n_seeds") == 2)
    )
    assert multitask.height == 2 and multitask["value"].is_finite().all()  # demo and demo_ft, across seeds
    images = read_table(r / "data/images.parquet", "images")
    frontal_test = images.filter((pl.col("split") == "test") & pl.col("view").is_in(["PA", "AP"]))
    assert set(per_run.filter(pl.col("metric") == "macro_auc")["n_queries"]) == {frontal_test["study_id"].n_unique()}
    table = read_table(r / "metrics/demo/multitask/seed0.zeroshot_auc.parquet", "zeroshot_auc")
    assert table.height >= 5 and table["value"].is_between(0, 1).all()
    gathered = pl.read_csv(r / "metrics/zeroshot_auc.csv")
    assert set(gathered.filter(pl.col("n_seeds") == 2)["variant"]) == {"multitask", "xtra"}
    prompts = pl.read_parquet(r / "embeddings/demo/prompts.parquet")  # the table embed_prompts writes
    assert prompts.height == 26  # 13 observations, one positive and one negative prompt each
    assert prompts.filter(pl.col("prompt_id") == "edema/negative/0")["text"].item() == "no edema"
    assert (r / "figures/zeroshot_auc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Zero-shot classification (text prompts)" in (r / "metrics/summary.md").read_text()


@pytest.mark.slow
def test_generation_results(tiny_results):
    r = tiny_results
    images = read_table(r / "data/images.parquet", "images")
    test_studies = images.filter((pl.col("split") == "test") & pl.col("view").is_in(["PA", "AP"]))[
        "study_id"
    ].n_unique()
    metrics = read_table(r / "metrics/generation.parquet", "generation_metrics")
    methods = set(metrics.select("backbone", "variant", "method").unique().rows())
    assert methods == {
        (None, None, "random"),
        (None, None, "most_frequent"),
        ("demo", "zeroshot", "retrieval"),
        ("demo", "zeroshot", "oracle"),
        ("demo", "multitask", "retrieval"),
        ("demo", "multitask", "oracle"),
        ("demo", "xtra", "retrieval"),
        ("demo", "xtra", "oracle"),
        ("demo", "xtra", "xtra"),
    } | {("demo_ft", variant, method) for variant in ("zeroshot", "multitask") for method in ("retrieval", "oracle")}
    assert set(metrics["n_studies"]) == {test_studies}
    bleu4 = metrics.filter(pl.col("metric") == "bleu4")
    assert bleu4["value"].is_between(0, 1).all() and bleu4["ci_low"].le(bleu4["ci_high"]).all()
    # The oracle picks, among the same top k, the report closest to the reference: never worse on ROUGE-L.
    rouge = dict(
        ((v, m), x)
        for v, m, x in metrics.filter(pl.col("metric") == "rouge_l").select("variant", "method", "value").iter_rows()
    )
    for variant in ("zeroshot", "multitask", "xtra"):
        assert rouge[(variant, "oracle")] >= rouge[(variant, "retrieval")]
    generated = read_table(r / "generation/demo/multitask/retrieval.parquet", "generated")
    studies = read_table(r / "data/studies.parquet", "studies")
    split_of = dict(studies.select("study_id", "split").iter_rows())
    assert {split_of[s] for s in generated["source_study_id"]} == {"train"}  # never a test report
    assert set(generated.filter(pl.col("method") == "retrieval")["rank"]) == {1}  # choice: top1
    summary = pl.read_csv(r / "metrics/summary.csv")
    rows = summary.filter(pl.col("task").str.starts_with("generation_"))
    assert set(rows["metric"]) == {"bleu4", "meteor", "rouge_l", "cider", "ce_f1_micro", "ce_f1_micro5"}
    assert rows.filter(pl.col("task") == "generation_random")["backbone"].is_null().all()
    markdown = (r / "metrics/summary.md").read_text()
    assert "## Report generation by retrieval" in markdown and "Examples (" in markdown
    assert (r / "figures/generation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pl.read_csv(r / "metrics/generation.csv").height == metrics.height


@pytest.mark.slow
def test_no_neighbour_shares_the_query_study_or_patient(tiny_results):
    folder = tiny_results / "xtra/demo/xtra"
    images = read_table(tiny_results / "data/images.parquet", "images")
    patient_of_image = dict(images.select("image_id", "patient_id").iter_rows())
    studies = read_table(tiny_results / "data/studies.parquet", "studies")
    patient_of_study = dict(studies.select("study_id", "patient_id").iter_rows())
    memory = pl.read_parquet(folder / "memory/images.parquet", columns=["image_id", "study_id"])
    study_of_image = dict(memory.iter_rows())
    k = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())["xtra"]["k"]
    for split in ("train", "validate", "test"):
        table = pl.read_parquet(folder / f"neighbours/{split}.parquet")
        assert table.height > 0 and set(table["image_id"]) <= set(patient_of_image)
        for row in table.iter_rows(named=True):
            assert len(row["i2i_ids"]) == len(row["i2r_ids"]) == k
            assert row["i2i_scores"] == sorted(row["i2i_scores"], reverse=True)
            patient = patient_of_image[row["image_id"]]
            assert all(patient_of_image[n] != patient and study_of_image[n] != row["study_id"] for n in row["i2i_ids"])
            assert all(patient_of_study[n] != patient and n != row["study_id"] for n in row["i2r_ids"])


@pytest.mark.slow
def test_second_run_has_nothing_to_do(tiny_results):
    again = run_snakemake(tiny_results, "--dry-run")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_forcerun_reruns_a_stage_and_what_follows(tiny_results):
    plan = run_snakemake(tiny_results, "--dry-run", "--forcerun", "train_head")
    text = plan.stdout + plan.stderr
    assert plan.returncode == 0
    for rule in ("train_head", "build_index", "evaluate", "summarize", "figures"):
        assert rule in text
    assert "embed_images " not in text.split("Job stats")[-1]


@pytest.mark.slow
def test_forcerun_train_xtra_reruns_it_and_what_follows(tiny_results):
    plan = run_snakemake(tiny_results, "--dry-run", "--forcerun", "train_xtra")
    stats = plan.stdout.split("Job stats")[-1].split("Reasons")[0]
    assert plan.returncode == 0, plan.stderr[-3000:]
    for rule in ("train_xtra", "evaluate_xtra", "summarize", "xtra_figure"):
        assert f"{rule} " in stats
    for rule in ("build_memory", "retrieve_neighbours", "train_head", "embed_images"):
        assert f"{rule} " not in stats


@pytest.mark.slow
def test_html_report_builds(tiny_report):
    """README: `snakemake --report results/report.html` after a run (built once: fixture tiny_report)."""
    _, report, _ = tiny_report
    html = report.read_text()
    for name in (
        "summary.csv",
        "paired_vs_zeroshot.csv",
        "tsne_demo.png",
        "recall_at_k.png",
        "generation.csv",
        "generation.png",
        "training_demo.png",
        "finding_precision_demo.png",
        "finding_precision.csv",
        "clinical_precision_demo.png",
        "retrieval_examples_demo.png",
        "rejects.png",
        "summary.html",
    ):
        assert name in html
    # The study description (workflow/report/workflow.rst) with this run's settings.
    assert "report retrieval" in html and "160 studies of 120" in html


@pytest.mark.slow
def test_zeroshot_head_is_seeded(tiny_results, tmp_path):
    """Two runs of train_head for the untrained zeroshot variant write identical weights."""
    copy = tmp_path / "results"  # a copy: the shared run's heads keep their times (tests dry-run on it)
    shutil.copytree(tiny_results, copy, copy_function=shutil.copy2)
    weights = copy / "models/demo/zeroshot/seed0/head.safetensors"
    first = weights.read_bytes()
    again = snakemake(
        "--cores",
        "1",
        "--nolock",
        str(weights),
        "--forcerun",
        "train_head",
        "--configfile",
        "tests/configs/tiny.yaml",
        "--config",
        f"results={copy}",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert weights.read_bytes() == first


def test_lint_finds_nothing():
    lint = snakemake("--lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Lints for rule" not in lint.stdout + lint.stderr


def _neighbours(results: Path, memory: Path, output: Path, k: int) -> int:
    from mtcxr.xtra.neighbours import NeighbourSettings, retrieve_neighbours

    projected = results / "projected/demo/xtra/seed0"
    settings = NeighbourSettings(k=k, index={"nprobe": 8, "ef_search": 16}, frontal_only=True)
    return retrieve_neighbours(str(memory), str(projected), "test", str(output), settings)


@pytest.mark.slow
def test_neighbour_faults_are_clear(tiny_results, tmp_path):
    from mtcxr.errors import InputError

    memory = tiny_results / "xtra/demo/xtra/memory"
    with pytest.raises(
        InputError, match=r"xtra.k is 5000, but the memory's images \(\d+ entries\) hold fewer than 5000"
    ):
        _neighbours(tiny_results, memory, tmp_path / "n.parquet", k=5000)
    other = tmp_path / "memory"
    shutil.copytree(memory, other)
    info = json.loads((other / "memory.json").read_text())
    (other / "memory.json").write_text(json.dumps({**info, "spec": "ViT-B-16:openai", "dim": 512}))
    with pytest.raises(
        InputError, match=r"built from 'ViT-B-16:openai' embeddings \(dim 512\), but the queries .* are 'demo'"
    ):
        _neighbours(tiny_results, other, tmp_path / "n.parquet", k=2)
    assert _neighbours(tiny_results, memory, tmp_path / "n.parquet", k=2) > 0


def test_memory_split_must_be_train():
    done = snakemake("-n", "--config", "xtra={memory: test}")
    assert done.returncode == 1
    assert "config key xtra.memory: 'test' is not one of ['train']" in done.stderr
