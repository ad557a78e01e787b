"""Stage `figures`: t-SNE of test image embeddings (zeroshot beside multitask), Recall@K with CI
bars, clinical precision by query finding and zero-shot classification's ROC-AUC by observation; the
other stages' figures (training, X-TRA, report generation) and those of the report's front page
(clinical precision, retrieval examples, rejects) are drawn here too."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: figures are rendered on headless nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from mtcxr import metrics  # noqa: E402
from mtcxr.embedding_io import read_embeddings  # noqa: E402
from mtcxr.summary.protocol_notes import PROTOCOL_TASKS, missing_protocol_note, protocols_evaluated  # noqa: E402
from mtcxr.tables import CHEXPERT_DISPLAY, ZEROSHOT_OBSERVATIONS, headline_rows, read_table, validate_table  # noqa: E402

log = logging.getLogger(__name__)
COLOURS = {False: "#1b9e77", True: "#d95f02"}


def _draw_note(ax, note: str, width: int = 60) -> None:
    """`note` in place of a panel whose rows are missing: the figure says why instead of drawing nothing."""
    import textwrap

    ax.text(0.5, 0.5, textwrap.fill(note, width), ha="center", va="center", fontsize=9, color="#374151")
    ax.set_axis_off()


def _save(fig, output: str, dpi: int, notes: list[str]) -> None:
    """Write `fig`; the notes drawn in place of missing panels also go into the PNG's Description text."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=dpi, metadata={"Description": "\n".join(notes)} if notes else None)
    plt.close(fig)


def tsne_sample(n_points: int, max_points: int, seed: int) -> tuple[np.ndarray | None, str]:
    """(sorted indices of a seeded sample of `max_points`, the caption saying so), or (None, "") when all
    `n_points` fit. t-SNE's time and memory grow with the square of its points: a MIMIC test split has
    about 5,000 frontal images per panel, and the figure's job must not grow with the dataset."""
    if n_points <= max_points:
        return None, ""
    chosen = np.sort(np.random.default_rng(seed).choice(n_points, max_points, replace=False))
    return chosen, f" (a random sample of {max_points:,} of {n_points:,} per panel)"


def tsne_figure(
    index_dirs: dict[str, str],
    labels_path: str,
    output: str,
    perplexity: float = 30.0,
    max_points: int = 3000,
    seed: int = 0,
) -> None:
    """Side-by-side t-SNE of each variant's test image embeddings, coloured normal/abnormal."""
    labels = read_table(labels_path, "labels").select("study_id", "abnormal")
    fig, axes = plt.subplots(1, len(index_dirs), figsize=(5.2 * len(index_dirs), 5), squeeze=False)
    sampled = ""
    for ax, (variant, folder) in zip(axes[0], index_dirs.items()):
        _, vectors, meta = read_embeddings(Path(folder) / "images.parquet", "image_id")
        studies = pl.read_parquet(Path(folder) / "images.parquet", columns=["study_id"]).join(
            labels, on="study_id", how="left", maintain_order="left"
        )
        abnormal = studies["abnormal"].fill_null(False).to_numpy()
        chosen, caption = tsne_sample(len(vectors), max_points, seed)
        if chosen is not None:
            vectors, abnormal, sampled = vectors[chosen], abnormal[chosen], caption
        silhouette = metrics.cosine_silhouette(vectors, abnormal, seed=seed)
        from sklearn.manifold import TSNE  # here: the other figure jobs need no scikit-learn at start-up

        points = TSNE(
            n_components=2,
            perplexity=min(perplexity, max(2.0, (len(vectors) - 1) / 3)),
            metric="cosine",
            init="pca",
            random_state=seed,
        ).fit_transform(vectors)
        for is_abnormal in (False, True):
            chosen = abnormal == is_abnormal
            ax.scatter(
                points[chosen, 0],
                points[chosen, 1],
                s=7,
                alpha=0.7,
                c=COLOURS[is_abnormal],
                label=f"{'abnormal' if is_abnormal else 'normal'} (n={chosen.sum()})",
            )
        ax.set_title(f"{meta.get('backbone', '')} / {variant}\nsilhouette (cosine) = {silhouette:.3f}")
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"t-SNE of test image embeddings{sampled}")
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)


def recall_figure(summary_path: str, output: str) -> None:
    """Recall@K per variant for i2t and t2i, one panel per task and backbone, with 95% CI bars.

    A variant trained with several seeds shows its across-seed mean and seed-and-query interval. A
    backbone evaluated without mtcxr's protocol shows CXR-CLIP's image→report Recall@K where it has
    them, and a note in each panel it has no rows for.
    """
    summary = read_table(summary_path, "metrics")
    recall = headline_rows(summary.filter(pl.col("metric") == "recall"))
    evaluated = [*(task for tasks in PROTOCOL_TASKS.values() for task in tasks), "classification"]
    backbones = summary.filter(pl.col("task").is_in(evaluated))["backbone"].drop_nulls().unique().sort().to_list()
    fig, axes = plt.subplots(max(1, len(backbones)), 2, figsize=(11, 4 * max(1, len(backbones))), squeeze=False)
    notes: list[str] = []
    if not backbones:
        notes.append("Recall@K: summary.parquet holds no retrieval metrics (every test gallery is empty).")
        _draw_note(axes[0][0], notes[-1])
        axes[0][1].set_axis_off()
    for row, backbone in enumerate(backbones):
        panels = [("i2t", "image → report"), ("t2i", "report → image")]
        protocols = protocols_evaluated(summary, backbone) or set()
        if "mtcxr" not in protocols and "cxr_clip" in protocols:
            panels[0] = ("cxr_clip_i2t", "image → report, CXR-CLIP protocol")
        for col, (task, title) in enumerate(panels):
            ax = axes[row][col]
            table = recall.filter((pl.col("backbone") == backbone) & (pl.col("task") == task))
            if not table.height:
                # CXR-CLIP's protocol would have drawn the image→report panel too.
                providers = ("mtcxr",) if task == "t2i" else ("mtcxr", "cxr_clip")
                note = missing_protocol_note(summary, backbone, f"{backbone}: {title} Recall@K", providers)
                notes.append(note or f"{backbone}: {title} Recall@K: no rows in summary.parquet.")
                _draw_note(ax, notes[-1], 55)
                continue
            variants = sorted(table["variant"].unique().to_list(), key=lambda v: (v != "zeroshot", v))
            ks = sorted(table["k"].unique().to_list())
            width = 0.8 / max(1, len(variants))
            for i, variant in enumerate(variants):
                part = table.filter(pl.col("variant") == variant).sort("k")
                x = np.array([ks.index(k) for k in part["k"]]) + (i - (len(variants) - 1) / 2) * width
                value = part["value"].to_numpy()
                # A row without an interval (an across-seed row without per-query values) gets no whisker.
                low = part["ci_low"].fill_null(part["value"]).to_numpy()
                high = part["ci_high"].fill_null(part["value"]).to_numpy()
                ax.bar(x, value, width, yerr=np.vstack([value - low, high - value]), capsize=2, label=variant)
            ax.set_xticks(np.arange(len(ks)), [f"R@{k}" for k in ks])
            ax.set_ylim(0, 1)
            ax.set_title(f"{backbone}: {title}")
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, output, 130, notes)
    for note in notes:
        log.warning("recall figure: %s", note)


def finding_precision_figure(
    findings: pl.DataFrame, backbone: str, output: str, summary: pl.DataFrame | None = None
) -> None:
    """Heatmap of image->report clinical precision by query finding (rows) and variant (columns),
    each cell annotated with its value and the finding's number of queries.

    Without rows for `backbone` the figure says why: mtcxr's protocol was not evaluated (read from
    `summary`, the `metrics` table), or else no test image has a positive finding.
    """
    table = headline_rows(findings.filter((pl.col("backbone") == backbone) & (pl.col("task") == "i2t")))
    variants = sorted(table["variant"].unique().to_list(), key=lambda v: (v != "zeroshot", v))
    names = [name for name in CHEXPERT_DISPLAY if name in set(table["finding"].to_list())]
    grid = np.full((len(names), len(variants)), np.nan)
    counts = {}
    for row in table.iter_rows(named=True):
        grid[names.index(row["finding"]), variants.index(row["variant"])] = row["value"]
        counts[row["finding"]] = row["n_queries"]
    fig, ax = plt.subplots(figsize=(1.3 * max(2, len(variants)) + 3.2, 0.42 * max(2, len(names)) + 1.6))
    notes: list[str] = []
    if names:
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value < 0.6 else "black",
                )
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), [f"{CHEXPERT_DISPLAY[n]} (n={counts[n]})" for n in names])
        fig.colorbar(image, ax=ax, label="share of the top k reports with the finding")
        k = table["k"][0]
        ax.set_title(f"{backbone}: image → report clinical precision by query finding (P@{k})", fontsize=10)
    else:
        fig.set_size_inches(7.5, 2.2)
        title = f"{backbone}: clinical precision by query finding"
        missing = None if summary is None else missing_protocol_note(summary, backbone, title)
        notes.append(missing or f"{title}: no test image has a positive finding.")
        _draw_note(ax, notes[-1], 80)
        log.warning("finding precision figure: %s", notes[-1])
    fig.tight_layout()
    _save(fig, output, 130, notes)


@dataclass(frozen=True)
class FigureOutputs:
    """The figures `make_figures` writes: one t-SNE per backbone (in `index_dirs` order), Recall@K, and
    where named one by-finding figure per backbone and the zero-shot AUC figure."""

    tsne: Sequence[str]
    recall: str
    findings: Sequence[str] = field(default_factory=tuple)
    zeroshot: str | None = None


def make_figures(
    index_dirs: dict[str, dict[str, str]],
    labels_path: str,
    summary_path: str,
    outputs: FigureOutputs,
    findings_path: str | None = None,
    zeroshot_path: str | None = None,
    perplexity: float = 30.0,
    seed: int = 0,
) -> None:
    """Write the t-SNE figure of each backbone (in `index_dirs` order), the Recall@K figure, with
    `findings_path` (finding_precision.csv) each backbone's per-finding figure and with `zeroshot_path`
    (zeroshot_auc.csv) the zero-shot AUC figure."""
    for (backbone, variants), output in zip(index_dirs.items(), outputs.tsne):
        tsne_figure(variants, labels_path, output, perplexity=perplexity, seed=seed)
        log.info("t-SNE of %s written to %s", backbone, output)
    recall_figure(summary_path, outputs.recall)
    summary = read_table(summary_path, "metrics")
    if findings_path is not None:
        findings = validate_table(pl.read_csv(findings_path, infer_schema_length=None), "finding_precision")
        for backbone, output in zip(index_dirs, outputs.findings):
            finding_precision_figure(findings, backbone, output, summary)
    if zeroshot_path is not None and outputs.zeroshot is not None:
        auc = validate_table(pl.read_csv(zeroshot_path, infer_schema_length=None), "zeroshot_auc")
        zeroshot_auc_figure(auc, summary, outputs.zeroshot)


ZEROSHOT_MACRO = "macro AUC"


def _zeroshot_points(auc: pl.DataFrame, summary: pl.DataFrame) -> pl.DataFrame:
    """(backbone, variant, label, value, low, high) to draw, per observation (display name) and for the macro
    AUC (summary's `zeroshot_classification` rows), from the per-run rows: a variant's one run gives its value
    and 95% CI; one trained with several seeds the mean over seeds, with the whisker from the lowest seed's
    CI bound to the highest's."""
    macro = summary.filter((pl.col("task") == "zeroshot_classification") & (pl.col("metric") == "macro_auc"))
    columns = ["backbone", "variant", "n_seeds", "label", "value", "ci_low", "ci_high"]
    observation = pl.col("observation").replace_strict(CHEXPERT_DISPLAY, return_dtype=pl.String).alias("label")
    rows = pl.concat(
        [
            auc.with_columns(observation).select(columns),
            macro.with_columns(pl.lit(ZEROSHOT_MACRO).alias("label")).select(columns),
        ]
    )
    return (
        rows.filter(pl.col("n_seeds").fill_null(1) == 1)
        .group_by("backbone", "variant", "label", maintain_order=True)
        .agg(
            pl.col("value").mean(),
            pl.col("ci_low").min().alias("low"),
            pl.col("ci_high").max().alias("high"),
        )
        .with_columns(pl.col("low").fill_null(pl.col("value")), pl.col("high").fill_null(pl.col("value")))
    )


def zeroshot_auc_figure(auc: pl.DataFrame, summary: pl.DataFrame, output: str) -> None:
    """Zero-shot classification's ROC-AUC by observation (rows, the macro AUC on top) and variant (colours,
    `zeroshot` first and uppermost), one panel per backbone, with 95% bootstrap CI whiskers and a dashed line
    at chance (0.5). `auc` is the `zeroshot_auc` table, `summary` the `metrics` table holding the macro rows."""
    points = _zeroshot_points(auc, summary)
    backbones = points["backbone"].unique().sort().to_list()
    labels = [ZEROSHOT_MACRO] + [
        CHEXPERT_DISPLAY[name] for name in ZEROSHOT_OBSERVATIONS if CHEXPERT_DISPLAY[name] in set(points["label"])
    ]
    panels = max(1, len(backbones))
    # Within a 1600 x 1000 window at 130 dpi: the observation names and the panels share 12 inches, 14 rows fit 7.5.
    fig, axes = plt.subplots(
        1, panels, figsize=(2.2 + min(4.6, 9.8 / panels) * panels, 0.38 * len(labels) + 2.1), squeeze=False, sharey=True
    )
    notes: list[str] = []
    if not backbones:
        fig.set_size_inches(8, 2.4)
        notes.append("Zero-shot classification: no observation with both classes among the test images, no rows.")
        _draw_note(axes[0][0], notes[-1])
        log.warning("zero-shot figure: %s", notes[-1])
    colours = plt.get_cmap("tab10").colors
    variants = sorted(points["variant"].unique().to_list(), key=lambda v: (v != "zeroshot", v))
    lowest = min([0.3, *(points["low"].drop_nulls().to_list())])
    handles = {}
    for ax, backbone in zip(axes[0], backbones):
        part = points.filter(pl.col("backbone") == backbone)
        present = [v for v in variants if v in set(part["variant"])]
        step = min(0.14, 0.7 / max(1, len(present)))
        for i, variant in enumerate(present):
            rows = {row["label"]: row for row in part.filter(pl.col("variant") == variant).iter_rows(named=True)}
            drawn = [label for label in labels if label in rows]
            y = [len(labels) - 1 - labels.index(label) - (i - (len(present) - 1) / 2) * step for label in drawn]
            values = np.array([rows[label]["value"] for label in drawn])
            low = values - np.array([rows[label]["low"] for label in drawn])
            high = np.array([rows[label]["high"] for label in drawn]) - values
            handles[variant] = ax.errorbar(
                values,
                y,
                xerr=[np.clip(low, 0, None), np.clip(high, 0, None)],
                fmt="o",
                ms=4,
                capsize=2,
                color=colours[variants.index(variant) % len(colours)],
                label=variant,
            )
        ax.axvline(0.5, color="grey", lw=0.8, ls="--")
        ax.axhline(len(labels) - 1.5, color="grey", lw=0.5)
        ax.set_yticks(range(len(labels)), list(reversed(labels)))
        ax.set_ylim(-0.7, len(labels) - 0.3)
        ax.set_xlim(max(0.0, lowest - 0.03), 1.01)
        ax.set_xlabel("ROC-AUC, test images (95% bootstrap CI)", fontsize=9)
        ax.set_title(backbone, fontsize=10)
    if handles:
        fig.suptitle("Zero-shot classification by text prompts (dashed: chance)", fontsize=11)
        order = [v for v in variants if v in handles]
        fig.legend([handles[v] for v in order], order, loc="lower center", ncol=min(6, len(order)), fontsize=8)
        fig.tight_layout(rect=(0, 0.05 if len(order) <= 6 else 0.09, 1, 1))
    else:
        fig.tight_layout()
    _save(fig, output, 130, notes)


METHOD_STYLE = {
    "xtra": ("#d95f02", "X-TRA (retrieval-augmented)"),
    "query_only": ("#7570b3", "same classifier, no retrieval"),
    "knn": ("#1b9e77", "kNN label voting"),
}


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
            low = [
                v - (rows[label]["ci_low"] if rows[label]["ci_low"] is not None else v)
                for v, label in zip(values, rows)
            ]
            high = [
                (rows[label]["ci_high"] if rows[label]["ci_high"] is not None else v) - v
                for v, label in zip(values, rows)
            ]
            ax.errorbar(values, y, xerr=[low, high], fmt="o", ms=4, capsize=2, color=colour, label=name)
        ax.axvline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_yticks(
            range(len(order)), list(reversed([("macro AUC" if label == "macro" else label) for label in order]))
        )
        ax.axhline(len(order) - 1.5, color="grey", lw=0.5)
        ax.set_xlim(0.3, 1.01)
        ax.set_xlabel("ROC-AUC on the test images (95% bootstrap CI)")
        ax.set_title(f"{backbone} / memory of {variant}")
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)


GENERATION_PANELS = (
    ("bleu4", "BLEU-4"),
    ("meteor", "METEOR"),
    ("rouge_l", "ROUGE-L"),
    ("cider", "CIDEr-D"),
    ("ce_f1_micro", "clinical F1, 14 findings"),
    ("ce_f1_micro5", "clinical F1, 5 findings"),
)
GENERATION_COLOURS = {
    "retrieval": "tab:blue",
    "xtra": "tab:purple",
    "oracle": "tab:grey",
    "most_frequent": "tab:orange",
    "random": "tab:red",
}


def generation_figure(metrics_path: str, output: str) -> None:
    """Corpus NLG metrics and clinical F1 by generation method, 95% CI bars; the random report dashed."""
    table = pl.read_parquet(metrics_path).filter(pl.col("observation").is_null())
    methods = table.select("backbone", "variant", "method").unique(maintain_order=True).rows()
    names = [method if backbone is None else f"{backbone}/{variant} {method}" for backbone, variant, method in methods]
    fig, axes = plt.subplots(
        1,
        len(GENERATION_PANELS),
        figsize=(3.1 * len(GENERATION_PANELS), 0.34 * len(methods) + 1.5),
        sharey=True,
        squeeze=False,
    )
    for ax, (metric, title) in zip(axes[0], GENERATION_PANELS):
        part = table.filter(pl.col("metric") == metric)
        for y, (backbone, variant, method) in enumerate(methods):
            hit = part.filter(
                (pl.col("method") == method)
                & (pl.col("backbone").is_null() if backbone is None else pl.col("backbone") == backbone)
                & (pl.col("variant").is_null() if variant is None else pl.col("variant") == variant)
            )
            if not hit.height:
                continue
            row = hit.row(0, named=True)
            ax.barh(
                len(methods) - 1 - y,
                row["value"],
                color=GENERATION_COLOURS.get(method, "tab:green"),
                alpha=0.8,
                xerr=[[row["value"] - row["ci_low"]], [row["ci_high"] - row["value"]]],
                capsize=2,
            )
            if method == "random":
                ax.axvline(row["value"], color="tab:red", lw=0.9, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(left=0)
        ax.grid(axis="x", lw=0.3)
    axes[0][0].set_yticks(range(len(methods)), list(reversed(names)), fontsize=8)
    fig.suptitle(
        "Report generation by retrieval: test studies, 95% bootstrap CI (dashed: a random train report)", fontsize=10
    )
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
        handles += [
            Line2D([], [], color="grey", label="train"),
            Line2D([], [], color="grey", ls="--", label="validation"),
            Line2D([], [], color="grey", marker="o", ls="", label="kept epoch"),
        ]
        ax.set_title(f"{backbone} / {variant}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (own objective)")
        ax.legend(handles=handles, fontsize=7)
    for ax in list(axes.flat)[len(by_variant) :]:
        ax.set_axis_off()
    if not by_variant:
        axes[0][0].text(0.5, 0.5, "no trained variant", ha="center", va="center")
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)


# --- figures of the report's front page (rules clinical_precision_figure, retrieval_examples_figure,
# rejects_figure in workflow/rules/summary.smk) -------------------------------------------------------

PRECISION_BARS = (
    ("precision_normal", "normal queries", COLOURS[False]),
    ("precision_abnormal", "abnormal queries", COLOURS[True]),
    ("balanced_precision", "class-balanced", "#4c72b0"),
)


def _variant_order(variants) -> list[str]:
    return sorted(set(variants), key=lambda v: (v != "zeroshot", v))


def clinical_precision_figure(summary_path: str, backbone: str, k: int, output: str) -> None:
    """Class-balanced Precision@k per variant with its normal-query and abnormal-query parts, for i2t and
    t2i, from the headline rows of summary.parquet (a variant trained with several seeds: its across-seed row).

    Whiskers are the row's 95% interval where it has one (a query bootstrap for an untrained variant, the
    seed-and-query bootstrap for an across-seed balanced value); an across-seed per-class value has only
    its standard deviation over seeds, drawn as an uncapped dotted whisker.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    wanted = [metric for metric, _, _ in PRECISION_BARS]
    summary = read_table(summary_path, "metrics")
    own = summary.filter((pl.col("backbone") == backbone) & pl.col("task").is_in(PROTOCOL_TASKS["mtcxr"]))
    table = headline_rows(own.filter(pl.col("metric").is_in(wanted) & (pl.col("k") == k)))
    if not table.height:
        log.warning("%s: no %s rows at k=%d for %s", summary_path, "/".join(wanted), k, backbone)
        note = missing_protocol_note(summary, backbone, f"{backbone}: clinical Precision@{k}")
        found = own.filter(pl.col("metric") == "precision")["k"].drop_nulls().unique().sort().to_list()
        if note is None and found and k not in found:
            note = (
                f"{backbone}: no Precision@{k} rows; summary.parquet holds Precision@"
                f"{', '.join(map(str, found))} (evaluated with another evaluate.precision_k)."
            )
        elif note is None:
            # evaluate writes the per-class rows only when the test queries hold both classes.
            note = (
                f"{backbone}: no normal/abnormal Precision@{k} to show. The test queries hold only one class "
                "(normal or abnormal), so the class-balanced value is undefined."
            )
        log.warning("clinical precision figure: %s", note)
        fig, ax = plt.subplots(figsize=(7.5, 2.2))
        _draw_note(ax, note, 80)
        _save(fig, output, 130, [note])
        return
    variants = _variant_order(table["variant"].to_list())
    rows = {(r["task"], r["variant"], r["metric"]): r for r in table.iter_rows(named=True)}
    # Wide rather than tall: the report centres a figure taller than the browser window and cuts its top.
    fig, axes = plt.subplots(2, 1, figsize=(max(7.5, 1.6 + 1.4 * len(variants)), 6.9))
    width = 0.26
    for ax, task in zip(axes, ("i2t", "t2i")):
        counts: dict[str, int] = {}
        for j, variant in enumerate(variants):
            for i, (metric, _, colour) in enumerate(PRECISION_BARS):
                row = rows.get((task, variant, metric))
                if row is None or row["value"] is None:
                    continue
                x = j + (i - 1) * width
                ax.bar(
                    x, row["value"], width * 0.92, color=colour, alpha=0.9 if metric == "balanced_precision" else 0.75
                )
                if row["ci_low"] is not None and row["ci_high"] is not None:
                    ax.errorbar(
                        x,
                        row["value"],
                        yerr=[[row["value"] - row["ci_low"]], [row["ci_high"] - row["value"]]],
                        color="black",
                        lw=1,
                        capsize=3,
                    )
                elif row["sd"] is not None:
                    ax.errorbar(x, row["value"], yerr=row["sd"], color="black", lw=1, ls=":", capsize=0)
                if metric == "balanced_precision":
                    top = row["ci_high"] if row["ci_high"] is not None else row["value"] + (row["sd"] or 0)
                    ax.text(x, top + 0.012, f"{row['value']:.3f}", ha="center", va="bottom", fontsize=7.5)
                if metric != "balanced_precision" and row["n_queries"] is not None:
                    counts[metric] = row["n_queries"]
        baseline = rows.get((task, "zeroshot", "balanced_precision"))
        if baseline is not None and len(variants) > 1:
            ax.axhline(baseline["value"], color="#4c72b0", lw=0.9, ls="--")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        seeds = {v: max((r["n_seeds"] or 1) for (t, vv, _), r in rows.items() if vv == v) for v in variants}
        ax.set_xticks(
            range(len(variants)),
            [f"{v}\n{f'{seeds[v]} seeds' if seeds[v] > 1 else 'one run'}" for v in variants],
            fontsize=9,
        )
        ax.set_ylim(0, 1.09)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.grid(axis="y", lw=0.3)
        queries = (
            f"{counts.get('precision_normal', '?')} normal and {counts.get('precision_abnormal', '?')} abnormal queries"
        )
        ax.set_title(
            f"{backbone}: {'image → report (i2t)' if task == 'i2t' else 'report → image (t2i)'}, {queries}", fontsize=10
        )
        ax.set_ylabel(f"Precision@{k}: share of the top {k}\nwith the query's normal/abnormal status", fontsize=9)
    handles = [Patch(color=colour, label=name) for _, name, colour in PRECISION_BARS]
    handles += [
        Line2D([], [], color="black", marker="_", ms=8, label="95% CI"),
        Line2D([], [], color="black", ls=":", label="± sd over seeds (no CI in summary)"),
        Line2D([], [], color="#4c72b0", ls="--", label="zeroshot, class-balanced"),
        Line2D([], [], color="grey", ls=":", label="chance, class-balanced (0.5)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Clinical precision at k = {k} on the test split", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)


def _label_text(row: dict | None) -> str:
    """A study's CheXpert labels in words: "normal", or "abnormal: Cardiomegaly, ?Edema" (? uncertain)."""
    if row is None:
        return "labels unknown"
    positive = [CHEXPERT_DISPLAY[c] for c in CHEXPERT_DISPLAY if c != "no_finding" and row.get(c) == 1]
    uncertain = ["?" + CHEXPERT_DISPLAY[c] for c in CHEXPERT_DISPLAY if c != "no_finding" and row.get(c) == -1]
    if row.get("abnormal") is False:
        return "normal" + (f" ({', '.join(uncertain)})" if uncertain else "")
    return "abnormal: " + (", ".join(positive + uncertain) or "no finding named")


def _clip_lines(text: str, width: int, lines: int) -> str:
    """`text` wrapped to `width` characters, at most `lines` lines, "…" where it was cut."""
    import textwrap

    wrapped = textwrap.wrap(" ".join(str(text).split()), width) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: width - 2].rstrip() + " …"
    return "\n".join(wrapped)


def _ranked_reports(folder: str, top_k: int, block: int = 2048) -> dict:
    """Every gallery image of an index folder against its distinct reports: the top-k report rows and
    scores, and the rank of the image's own report (1 = first), ties broken towards the lower row as
    in mtcxr.metrics. Blocked so that no images x reports matrix is held."""
    image_ids, images, _ = read_embeddings(Path(folder) / "images.parquet", "image_id")
    studies = pl.read_parquet(Path(folder) / "images.parquet", columns=["study_id"])["study_id"].to_list()
    _, texts, _ = read_embeddings(Path(folder) / "texts.parquet", "text_id")
    table = pl.read_parquet(Path(folder) / "texts.parquet", columns=["study_ids", "report"])
    row_of_study = {s: i for i, ids in enumerate(table["study_ids"].to_list()) for s in ids.split()}
    own = np.array([row_of_study.get(s, -1) for s in studies])
    k = min(top_k, len(texts))
    top = np.empty((len(images), k), dtype=np.int64)
    top_scores = np.empty((len(images), k), dtype=np.float32)
    rank = np.empty(len(images), dtype=np.int64)
    for start in range(0, len(images), block):
        scores = images[start : start + block] @ texts.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top[start : start + block] = order
        top_scores[start : start + block] = np.take_along_axis(scores, order, axis=1)
        rows = np.arange(len(scores))
        mine = own[start : start + block]
        own_score = scores[rows, np.maximum(mine, 0)][:, None]
        ahead = (scores > own_score) | ((scores == own_score) & (np.arange(len(texts))[None, :] < mine[:, None]))
        rank[start : start + block] = np.where(mine >= 0, ahead.sum(axis=1) + 1, 0)  # 0: own report not in the gallery
    return {
        "image_ids": list(image_ids),
        "studies": studies,
        "own": own,
        "top": top,
        "scores": top_scores,
        "rank": rank,
        "reports": table["report"].to_list(),
        "report_studies": table["study_ids"].to_list(),
    }


def choose_examples(hits: np.ndarray, n: int, seed: int) -> list[int]:
    """`n` query rows of `hits` (queries x variants, own report in the top k), drawn by seed so that hits and
    misses mix: taking in turn from each pattern of hits, patterns where the variants disagree first (the
    heads help or hurt), then all variants finding it, then none."""
    rng = np.random.default_rng(seed)
    patterns: dict[tuple, list[int]] = {}
    for i, row in enumerate(hits):
        patterns.setdefault(tuple(bool(v) for v in row), []).append(i)
    # Disagreements first, those where the later variants (the trained heads) find it before the others.
    order = sorted(patterns, key=lambda p: (0 if len(set(p)) > 1 else (1 if all(p) else 2), [not v for v in p[::-1]]))
    pools = [list(rng.permutation(patterns[p])) for p in order]
    chosen: list[int] = []
    while len(chosen) < min(n, len(hits)):
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(int(pool.pop(0)))
    return chosen


def retrieval_examples_figure(
    index_dirs: dict[str, str],
    pixel_files: list[str],
    labels_path: str,
    output: str,
    n_queries: int,
    seed: int,
    top_k: int = 3,
) -> None:
    """A few test query images (rows), each with its top-k retrieved reports under every variant in
    `index_dirs` (columns; variant -> index folder), their labels, and whether the query's own report is
    among them. Queries are drawn by seed with `choose_examples`, mixing hits and misses."""
    import io

    from PIL import Image

    if not index_dirs:
        raise ValueError("retrieval_examples_figure needs at least one index folder")
    ranked = {variant: _ranked_reports(folder, top_k) for variant, folder in index_dirs.items()}
    variants = list(ranked)
    first = ranked[variants[0]]
    for variant in variants[1:]:
        if ranked[variant]["image_ids"] != first["image_ids"]:
            raise ValueError(
                f"index folders {index_dirs[variants[0]]} and {index_dirs[variant]} hold different test "
                "images; rebuild them (`snakemake --forcerun build_index`)"
            )
    hits = np.stack([(ranked[v]["rank"] >= 1) & (ranked[v]["rank"] <= top_k) for v in variants], axis=1)
    chosen = choose_examples(hits, n_queries, seed)
    ids = [first["image_ids"][i] for i in chosen]
    log.info(
        "retrieval examples: %s among %d test images; own report in the top %d per %s: %s",
        ids,
        len(hits),
        top_k,
        "/".join(variants),
        [hits[i].tolist() for i in chosen],
    )
    pixels = dict(
        pl.scan_parquet(list(pixel_files))
        .filter(pl.col("image_id").is_in(ids))
        .select("image_id", "png")
        .collect()
        .iter_rows()
    )
    # Only the studies shown: the queries and the first study of each report they retrieve.
    shown = {first["studies"][i] for i in chosen} | {
        ranked[v]["report_studies"][int(row)].split()[0]
        for v in variants
        for i in chosen
        for row in ranked[v]["top"][i]
    }
    table = read_table(labels_path, "labels").filter(pl.col("study_id").is_in(list(shown)))
    labels = {row["study_id"]: row for row in table.iter_rows(named=True)}

    # Sized so that four queries fit a 1600 x 1000 browser window: the report centres a figure taller than
    # the window vertically and its top cannot be scrolled to.
    columns, row_height = len(variants), 2.05
    fig = plt.figure(figsize=(2.3 + 4.7 * columns, 0.45 + row_height * max(1, len(chosen))))
    grid = fig.add_gridspec(
        max(1, len(chosen)),
        1 + columns,
        width_ratios=[2.3] + [4.7] * columns,
        hspace=0.16,
        wspace=0.03,
        left=0.008,
        right=0.995,
        top=1 - 0.42 / fig.get_figheight(),
        bottom=0.005,
    )
    if not chosen:
        fig.text(0.5, 0.5, "no test image to show", ha="center", va="center")
    hit_colour, miss_colour = "#1a7f37", "#b42318"
    for r, i in enumerate(chosen):
        study = first["studies"][i]
        cell = grid[r, 0].subgridspec(2, 1, height_ratios=[1.25, 0.8], hspace=0.04)
        ax = fig.add_subplot(cell[0])
        if ids[r] in pixels:
            ax.imshow(Image.open(io.BytesIO(pixels[ids[r]])).convert("L"), cmap="gray", vmin=0, vmax=255)
        else:
            ax.text(0.5, 0.5, "image not in the pixel cache", ha="center", va="center", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(_clip_lines(f"query {ids[r]}", 34, 1), fontsize=8, loc="left", pad=2)
        ax = fig.add_subplot(cell[1])
        ax.set_axis_off()
        about = _clip_lines(_label_text(labels.get(study)), 32, 2)
        ax.annotate(about, xy=(0, 1), xycoords="axes fraction", va="top", fontsize=8, fontweight="bold")
        own_text = first["reports"][int(first["own"][i])] if first["own"][i] >= 0 else "(not in the gallery)"
        ax.annotate(
            _clip_lines("own report: " + own_text, 46, 4 - about.count("\n")),
            xy=(0, 1),
            xycoords="axes fraction",
            xytext=(0, -10.5 * (about.count("\n") + 1) - 1),
            textcoords="offset points",
            va="top",
            fontsize=7.5,
            color="#374151",
        )
        for c, variant in enumerate(variants):
            found = ranked[variant]
            ax = fig.add_subplot(grid[r, 1 + c])
            ax.set_axis_off()
            rank = int(found["rank"][i])
            hit = 1 <= rank <= top_k
            verdict = (
                f"own report found at rank {rank}"
                if hit
                else (f"own report not in the top {top_k} (rank {rank})" if rank else "own report not in the gallery")
            )
            ax.annotate(
                f"{variant}: {verdict}",
                xy=(0, 1),
                xycoords="axes fraction",
                va="top",
                fontsize=9,
                fontweight="bold",
                color=hit_colour if hit else miss_colour,
            )
            offset = 14.0
            for position, (row, score) in enumerate(zip(found["top"][i], found["scores"][i]), start=1):
                own = int(row) == int(found["own"][i])
                source = found["report_studies"][int(row)].split()[0]
                # Score first: long label lists are what gets cut.
                head = _clip_lines(
                    f"{position}. cosine {score:.2f} · {'[own report] ' if own else ''}"
                    f"{_label_text(labels.get(source))}",
                    66 if own else 74,
                    1,
                )
                ax.annotate(
                    head,
                    xy=(0, 1),
                    xycoords="axes fraction",
                    xytext=(0, -offset),
                    textcoords="offset points",
                    va="top",
                    fontsize=8,
                    color=hit_colour if own else "#1f2937",
                    fontweight="bold" if own else "normal",
                )
                offset += 10.5
                body = _clip_lines(found["reports"][int(row)], 82, 2)
                ax.annotate(
                    body,
                    xy=(0, 1),
                    xycoords="axes fraction",
                    xytext=(9, -offset),
                    textcoords="offset points",
                    va="top",
                    fontsize=7.5,
                    color="#374151",
                )
                offset += 9.6 * (body.count("\n") + 1) + 3.5
    fig.suptitle(
        f"Retrieval examples: test images and the top {top_k} reports each variant retrieves "
        f"(green: the query's own report)",
        fontsize=10,
        x=0.008,
        y=1 - 0.1 / fig.get_figheight(),
        ha="left",
        va="top",
    )
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)


STAGE_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def reject_reason_kind(reason: str) -> str:
    """The general part of a reject reason: up to its first ": " or "; " outside parentheses (what follows
    names the item's specifics, e.g. "oversized: 400x400 exceeds …" -> "oversized")."""
    text, depth = str(reason), 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth <= 0 and char in ":;" and text[i + 1 : i + 2] in (" ", ""):
            text = text[:i]
            break
    return text.strip() or "no reason given"


def reject_counts(rejects: pl.DataFrame, max_bars: int = 18) -> pl.DataFrame:
    """Rejected items counted by `stage` and `kind` (`reject_reason_kind`), stages by their total and each
    stage's reasons by count; past `max_bars` rows the rarest are pooled into one "N other reasons" row
    per stage (`pooled`), last in its stage."""
    counts = (
        rejects.with_columns(kind=pl.col("reason").map_elements(reject_reason_kind, return_dtype=pl.String))
        .group_by("stage", "kind")
        .len()
        .sort(["len", "stage", "kind"], descending=[True, False, False])
    )
    counts = counts.with_columns(pl.col("len").cast(pl.Int64), pooled=pl.lit(False))
    if counts.height > max_bars:  # the rarest reasons of each stage pooled into one bar, last in its stage
        keep = max(1, max_bars - counts["stage"].n_unique())
        rest = (
            counts.slice(keep)
            .group_by("stage")
            .agg(pl.col("kind").first(), pl.col("len").sum(), pl.len().alias("reasons"))
        )
        rest = rest.select(
            "stage",
            len=pl.col("len"),
            pooled=pl.col("reasons") > 1,  # one reason left stays itself
            kind=pl.when(pl.col("reasons") > 1)
            .then(pl.format("{} other reasons", pl.col("reasons")))
            .otherwise(pl.col("kind")),
        )
        counts = pl.concat([counts.head(keep), rest.select(counts.columns)])
    stages = (
        counts.group_by("stage")
        .agg(pl.col("len").sum())
        .sort(["len", "stage"], descending=[True, False])["stage"]
        .to_list()
    )
    counts = counts.with_columns(
        order=pl.col("stage").replace_strict({s: i for i, s in enumerate(stages)}, return_dtype=pl.Int64)
    ).sort(["order", "pooled", "len", "kind"], descending=[False, False, True, False])
    return counts.select("stage", "kind", "len", "pooled")


def rejects_figure(reject_files: dict[str, str], output: str, max_bars: int = 18) -> None:
    """Items left out, counted by stage and reason, from every rejects table (`reject_files`: a label
    shown when nothing was rejected -> path). Reasons are grouped by `reject_reason_kind`; past
    `max_bars` groups the rarest are pooled per stage. With no reject, the figure says so."""
    import textwrap

    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    tables = [read_table(path, "rejects") for path in reject_files.values()]
    rejects = (
        pl.concat(tables)
        if tables
        else pl.DataFrame(schema={"item": pl.String, "path": pl.String, "stage": pl.String, "reason": pl.String})
    )
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    if not rejects.height:
        log.info("no item was rejected (%d tables read)", len(reject_files))
        fig, ax = plt.subplots(figsize=(8, 2.6))
        ax.set_axis_off()
        ax.text(
            0.5, 0.72, "No item was rejected", ha="center", va="center", fontsize=16, fontweight="bold", color="#1a7f37"
        )
        read = textwrap.fill(f"{len(reject_files)} rejects tables read, all empty: " + ", ".join(reject_files), 100)
        ax.text(0.5, 0.32, read, ha="center", va="center", fontsize=8.5, color="#374151")
        fig.savefig(output, dpi=130)
        plt.close(fig)
        return
    log.info("%d rejected items in %d tables", rejects.height, len(reject_files))
    counts = reject_counts(rejects, max_bars)
    stages = counts["stage"].unique(maintain_order=True).to_list()
    fig, ax = plt.subplots(figsize=(9.5, 1.3 + 0.34 * counts.height))  # 18 bars still fit a browser window
    y = np.arange(counts.height)[::-1]
    colours = [STAGE_COLOURS[stages.index(s) % len(STAGE_COLOURS)] for s in counts["stage"]]
    ax.barh(y, counts["len"].to_numpy(), color=colours, alpha=0.85)
    for yy, n in zip(y, counts["len"]):
        ax.text(n, yy, f" {n}", va="center", fontsize=8.5)
    ax.set_yticks(y, [textwrap.shorten(kind, 70, placeholder=" …") for kind in counts["kind"]], fontsize=8.5)
    ax.set_xlim(0, counts["len"].max() * 1.15)
    ax.set_xlabel("items rejected")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", lw=0.3)
    totals = dict(rejects.group_by("stage").len().iter_rows())
    ax.legend(
        handles=[
            Patch(color=STAGE_COLOURS[i % len(STAGE_COLOURS)], label=f"{s} ({totals[s]})") for i, s in enumerate(stages)
        ],
        fontsize=8.5,
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncol=min(3, len(stages)),
        frameon=False,
        title="stage (items)",
        title_fontsize=8.5,
        alignment="left",
    )
    fig.suptitle(f"Rejected items: {rejects.height}, by stage and reason", fontsize=10.5)
    fig.tight_layout()
    fig.savefig(output, dpi=105)
    plt.close(fig)
