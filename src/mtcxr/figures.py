"""Stage `figures`: t-SNE of test image embeddings (zeroshot beside multitask), Recall@K with CI
bars, and clinical precision by query finding; the other stages' figures (training, X-TRA, report
generation) are drawn here too."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: figures are rendered on headless nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from mtcxr import metrics  # noqa: E402
from mtcxr.embeddings import read_embeddings  # noqa: E402
from mtcxr.tables import CHEXPERT_DISPLAY, headline_rows, read_table, validate_table  # noqa: E402

log = logging.getLogger(__name__)
COLOURS = {False: "#1b9e77", True: "#d95f02"}


def tsne_figure(index_dirs: dict[str, str], labels_path: str, output: str, perplexity: float = 30.0,
                max_points: int = 3000, seed: int = 0) -> None:
    """Side-by-side t-SNE of each variant's test image embeddings, coloured normal/abnormal."""
    labels = read_table(labels_path, "labels").select("study_id", "abnormal")
    fig, axes = plt.subplots(1, len(index_dirs), figsize=(5.2 * len(index_dirs), 5), squeeze=False)
    for ax, (variant, folder) in zip(axes[0], index_dirs.items()):
        _, vectors, meta = read_embeddings(Path(folder) / "images.parquet", "image_id")
        studies = pl.read_parquet(Path(folder) / "images.parquet", columns=["study_id"]).join(labels, on="study_id", how="left", maintain_order="left")
        abnormal = studies["abnormal"].fill_null(False).to_numpy()
        if len(vectors) > max_points:
            chosen = np.sort(np.random.default_rng(seed).choice(len(vectors), max_points, replace=False))
            vectors, abnormal = vectors[chosen], abnormal[chosen]
        silhouette = metrics.cosine_silhouette(vectors, abnormal, seed=seed)
        points = TSNE(n_components=2, perplexity=min(perplexity, max(2.0, (len(vectors) - 1) / 3)), metric="cosine",
                      init="pca", random_state=seed).fit_transform(vectors)
        for is_abnormal in (False, True):
            chosen = abnormal == is_abnormal
            ax.scatter(points[chosen, 0], points[chosen, 1], s=7, alpha=0.7, c=COLOURS[is_abnormal],
                       label=f"{'abnormal' if is_abnormal else 'normal'} (n={chosen.sum()})")
        ax.set_title(f"{meta.get('backbone', '')} / {variant}\nsilhouette (cosine) = {silhouette:.3f}")
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("t-SNE of test image embeddings")
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)


def recall_figure(summary_path: str, output: str) -> None:
    """Recall@K per variant for i2t and t2i, one panel per task and backbone, with 95% CI bars.

    A variant trained with several seeds shows its across-seed mean and seed-and-query interval.
    """
    summary = headline_rows(read_table(summary_path, "metrics").filter(pl.col("metric") == "recall"))
    backbones = summary["backbone"].unique().sort().to_list()
    tasks = ["i2t", "t2i"]
    fig, axes = plt.subplots(len(backbones), 2, figsize=(11, 4 * len(backbones)), squeeze=False)
    for row, backbone in enumerate(backbones):
        for col, task in enumerate(tasks):
            ax = axes[row][col]
            table = summary.filter((pl.col("backbone") == backbone) & (pl.col("task") == task))
            variants = sorted(table["variant"].unique().to_list(), key=lambda v: (v != "zeroshot", v))
            ks = sorted(table["k"].unique().to_list())
            width = 0.8 / max(1, len(variants))
            for i, variant in enumerate(variants):
                part = table.filter(pl.col("variant") == variant).sort("k")
                x = np.arange(len(ks)) + (i - (len(variants) - 1) / 2) * width
                value = part["value"].to_numpy()
                errors = np.vstack([value - part["ci_low"].to_numpy(), part["ci_high"].to_numpy() - value])
                ax.bar(x, value, width, yerr=errors, capsize=2, label=variant)
            ax.set_xticks(np.arange(len(ks)), [f"R@{k}" for k in ks])
            ax.set_ylim(0, 1)
            ax.set_title(f"{backbone}: {'image → report' if task == 'i2t' else 'report → image'}")
            ax.legend(fontsize=8)
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)


def finding_precision_figure(findings: pl.DataFrame, backbone: str, output: str) -> None:
    """Heatmap of image->report clinical precision by query finding (rows) and variant (columns),
    each cell annotated with its value and the finding's number of queries."""
    table = headline_rows(findings.filter((pl.col("backbone") == backbone) & (pl.col("task") == "i2t")))
    variants = sorted(table["variant"].unique().to_list(), key=lambda v: (v != "zeroshot", v))
    names = [name for name in CHEXPERT_DISPLAY if name in set(table["finding"].to_list())]
    grid = np.full((len(names), len(variants)), np.nan)
    counts = {}
    for row in table.iter_rows(named=True):
        grid[names.index(row["finding"]), variants.index(row["variant"])] = row["value"]
        counts[row["finding"]] = row["n_queries"]
    fig, ax = plt.subplots(figsize=(1.3 * max(2, len(variants)) + 3.2, 0.42 * max(2, len(names)) + 1.6))
    if names:
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value < 0.6 else "black")
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), [f"{CHEXPERT_DISPLAY[n]} (n={counts[n]})" for n in names])
        fig.colorbar(image, ax=ax, label="share of the top k reports with the finding")
        k = table["k"][0]
        ax.set_title(f"{backbone}: image → report clinical precision by query finding (P@{k})", fontsize=10)
    else:
        ax.text(0.5, 0.5, "no test image has a positive finding", ha="center", va="center")
        ax.set_axis_off()
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)


def make_figures(index_dirs: dict[str, dict[str, str]], labels_path: str, summary_path: str, output_tsne: list[str],
                 output_recall: str, findings_path: str | None = None, output_findings: list[str] = (),
                 perplexity: float = 30.0, seed: int = 0) -> None:
    """Write the t-SNE figure of each backbone (in `index_dirs` order), the Recall@K figure and, with
    `findings_path` (finding_precision.csv), each backbone's per-finding figure."""
    for (backbone, variants), output in zip(index_dirs.items(), output_tsne):
        tsne_figure(variants, labels_path, output, perplexity=perplexity, seed=seed)
        log.info("t-SNE of %s written to %s", backbone, output)
    recall_figure(summary_path, output_recall)
    if findings_path is not None:
        findings = validate_table(pl.read_csv(findings_path, infer_schema_length=None), "finding_precision")
        for backbone, output in zip(index_dirs, output_findings):
            finding_precision_figure(findings, backbone, output)


METHOD_STYLE = {"xtra": ("#d95f02", "X-TRA (retrieval-augmented)"), "query_only": ("#7570b3", "same classifier, no retrieval"),
                "knn": ("#1b9e77", "kNN label voting")}


def xtra_auc_figure(auc_files: list[str], output: str) -> None:
    """Per-label ROC-AUC by method (X-TRA, no retrieval, kNN) with 95% CI bars, one panel per backbone/variant."""
    auc = pl.concat([pl.read_parquet(path) for path in auc_files])
    panels = auc.select("backbone", "variant").unique().sort("backbone", "variant").rows()
    labels = [label for label in auc["label"].unique(maintain_order=True).to_list() if label != "macro"]
    order = ["macro", *sorted(labels)]  # macro on top, observations alphabetical below it
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 0.42 * len(order) + 1.6), squeeze=False)
    for ax, (backbone, variant) in zip(axes[0], panels):
        part = auc.filter((pl.col("backbone") == backbone) & (pl.col("variant") == variant))
        methods = [m for m in METHOD_STYLE if m in part["method"].to_list()]
        for i, method in enumerate(methods):
            colour, name = METHOD_STYLE[method]
            rows = {row["label"]: row for row in part.filter(pl.col("method") == method).iter_rows(named=True)}
            y = [len(order) - 1 - order.index(label) + (i - (len(methods) - 1) / 2) * 0.22 for label in rows]
            values = [rows[label]["value"] for label in rows]
            low = [v - (rows[label]["ci_low"] if rows[label]["ci_low"] is not None else v) for v, label in zip(values, rows)]
            high = [(rows[label]["ci_high"] if rows[label]["ci_high"] is not None else v) - v for v, label in zip(values, rows)]
            ax.errorbar(values, y, xerr=[low, high], fmt="o", ms=4, capsize=2, color=colour, label=name)
        ax.axvline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_yticks(range(len(order)), list(reversed([("macro AUC" if label == "macro" else label) for label in order])))
        ax.axhline(len(order) - 1.5, color="grey", lw=0.5)
        ax.set_xlim(0.3, 1.01)
        ax.set_xlabel("ROC-AUC on the test images (95% bootstrap CI)")
        ax.set_title(f"{backbone} / memory of {variant}")
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)


GENERATION_PANELS = (("bleu4", "BLEU-4"), ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"), ("cider", "CIDEr-D"),
                     ("ce_f1_micro", "clinical F1, 14 findings"), ("ce_f1_micro5", "clinical F1, 5 findings"))
GENERATION_COLOURS = {"retrieval": "tab:blue", "xtra": "tab:purple", "oracle": "tab:grey", "most_frequent": "tab:orange",
                      "random": "tab:red"}


def generation_figure(metrics_path: str, output: str) -> None:
    """Corpus NLG metrics and clinical F1 by generation method, 95% CI bars; the random report dashed."""
    table = pl.read_parquet(metrics_path).filter(pl.col("observation").is_null())
    methods = table.select("backbone", "variant", "method").unique(maintain_order=True).rows()
    names = [method if backbone is None else f"{backbone}/{variant} {method}" for backbone, variant, method in methods]
    fig, axes = plt.subplots(1, len(GENERATION_PANELS), figsize=(3.1 * len(GENERATION_PANELS), 0.34 * len(methods) + 1.5),
                             sharey=True, squeeze=False)
    for ax, (metric, title) in zip(axes[0], GENERATION_PANELS):
        part = table.filter(pl.col("metric") == metric)
        for y, (backbone, variant, method) in enumerate(methods):
            hit = part.filter((pl.col("method") == method)
                              & (pl.col("backbone").is_null() if backbone is None else pl.col("backbone") == backbone)
                              & (pl.col("variant").is_null() if variant is None else pl.col("variant") == variant))
            if not hit.height:
                continue
            row = hit.row(0, named=True)
            ax.barh(len(methods) - 1 - y, row["value"], color=GENERATION_COLOURS.get(method, "tab:green"), alpha=0.8,
                    xerr=[[row["value"] - row["ci_low"]], [row["ci_high"] - row["value"]]], capsize=2)
            if method == "random":
                ax.axvline(row["value"], color="tab:red", lw=0.9, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(left=0)
        ax.grid(axis="x", lw=0.3)
    axes[0][0].set_yticks(range(len(methods)), list(reversed(names)), fontsize=8)
    fig.suptitle("Report generation by retrieval: test studies, 95% bootstrap CI (dashed: a random train report)",
                 fontsize=10)
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)


def training_figure(histories: dict[str, str], output: str, backbone: str) -> None:
    """Train and validation loss per epoch of every trained variant, the kept epoch marked.

    `histories` maps "variant/seedN" (or "variant") to its history.parquet; a variant's seeds share
    one panel, one colour per seed: train loss solid, validation loss dashed, the kept epoch a dot.
    """
    from matplotlib.lines import Line2D

    by_variant: dict[str, dict[str, pl.DataFrame]] = {}
    for key, path in histories.items():
        table = pl.read_parquet(path)
        if table.height and "train_total" in table.columns:
            variant, _, run = key.partition("/")
            by_variant.setdefault(variant, {})[run] = table
    columns = min(3, max(1, len(by_variant)))
    rows = -(-max(1, len(by_variant)) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.5 * rows), squeeze=False)
    for ax, (variant, runs) in zip(axes.flat, by_variant.items()):
        handles = []
        for colour, (run, table) in enumerate(runs.items()):
            ax.plot(table["epoch"], table["train_total"], color=f"C{colour}", lw=1.1)
            curve = "validate_total" if "validate_total" in table.columns else "train_total"
            if curve == "validate_total":
                ax.plot(table["epoch"], table[curve], color=f"C{colour}", lw=1.1, ls="--")
            chosen = table.filter(pl.col("chosen")) if "chosen" in table.columns else table.head(0)
            kept = f", kept epoch {chosen['epoch'][0]}" if chosen.height else ""
            if chosen.height:
                ax.plot(chosen["epoch"], chosen[curve], "o", color=f"C{colour}", ms=6)
            handles.append(Line2D([], [], color=f"C{colour}", label=f"{run.replace('seed', 'seed ') or 'run'}{kept}"))
        handles += [Line2D([], [], color="grey", label="train"), Line2D([], [], color="grey", ls="--", label="validation"),
                    Line2D([], [], color="grey", marker="o", ls="", label="kept epoch")]
        ax.set_title(f"{backbone} / {variant}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (own objective)")
        ax.legend(handles=handles, fontsize=7)
    for ax in list(axes.flat)[len(by_variant):]:
        ax.set_axis_off()
    if not by_variant:
        axes[0][0].text(0.5, 0.5, "no trained variant", ha="center", va="center")
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)
