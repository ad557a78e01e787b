"""The report's front page: its figures and helpers (fast), and `snakemake --report` after the tiny
end-to-end run, opened in headless Chromium as a reader sees it (slow; skipped without a browser)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from mtcxr.config import run_config
from mtcxr.embedding_io import write_embeddings
from mtcxr.summary import figures
from mtcxr.summary import page as report
from mtcxr.tables import CONTRACTS, write_table

REPO = Path(__file__).resolve().parents[1]
WINDOW = (1600, 1000)  # the browser window every check and screenshot uses


# --- summary.md as a page -------------------------------------------------------------------------


def test_markdown_subset_becomes_html():
    text = (
        "# mtcxr results\n\n`balanced_precision` is the mean\nof two values.\n\n## Backbone `demo`\n\n"
        "| variant | i2t recall@10 |\n|---|---|\n| zeroshot | 0.244 [0.200, 0.295] |\n| a<b & c | x \\| y |\n\n"
        "No item was rejected.\n"
    )
    page = report.markdown_to_html(text)
    assert "<h1>mtcxr results</h1>" in page and "<h2>Backbone <code>demo</code></h2>" in page
    assert "<p><code>balanced_precision</code> is the mean of two values.</p>" in page
    assert "<thead><tr><th>variant</th><th>i2t recall@10</th></tr></thead>" in page
    assert "<tr><td>zeroshot</td><td>0.244 [0.200, 0.295]</td></tr>" in page
    assert "<tr><td>a&lt;b &amp; c</td><td>x | y</td></tr>" in page  # escaped; an escaped pipe stays in its cell
    assert "<p>No item was rejected.</p>" in page and page.count("<table>") == 1


def test_summary_page_keeps_every_table_of_summary_md(tmp_path):
    markdown = tmp_path / "summary.md"
    markdown.write_text("# r\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n### s\n\n| c |\n|---|\n| 3 |\n| 4 |\n")
    report.summary_html(markdown, tmp_path / "out/summary.html")
    page = (tmp_path / "out/summary.html").read_text()
    assert page.count("<table>") == 2 and page.count("<tr>") == 5 and "<h3>s</h3>" in page


def test_console_errors_are_read_from_chromium_log():
    log = (
        '[1:1:INFO:CONSOLE:75] "cdn.tailwindcss.com should not be used in production.", source: file:///r.html (75)\n'
        '[1:1:INFO:CONSOLE:9] "Uncaught TypeError: x is undefined", source: file:///r.html (9)\n'
    )
    assert report.console_errors(log) == ["Uncaught TypeError: x is undefined"]


# --- figures ------------------------------------------------------------------------------------


def test_reject_reasons_are_grouped_by_their_general_part():
    assert figures.reject_reason_kind("oversized: 400x400 exceeds the pixel limit of 100000") == "oversized"
    assert (
        figures.reject_reason_kind("empty report: no findings text (text.section: findings); it has an impression: x")
        == "empty report"
    )
    # A colon inside parentheses belongs to the reason.
    assert (
        figures.reject_reason_kind("no findings text (generation.reference: findings)")
        == "no findings text (generation.reference: findings)"
    )
    assert figures.reject_reason_kind("") == "no reason given"


def _rejects(rows: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"item": f"i{i}", "path": None, "stage": stage, "reason": reason} for i, (stage, reason) in enumerate(rows)],
        schema={c: pl.String for c in CONTRACTS["rejects"]},
    )


def test_reject_counts_by_stage_and_reason():
    rejects = _rejects(
        [
            ("ingest", "empty report: a"),
            ("ingest", "empty report: b"),
            ("ingest", "duplicate image_id"),
            ("preprocess_images", "missing file"),
            ("preprocess_images", "oversized: 9x9"),
            ("preprocess_images", "oversized: 8x8"),
            ("preprocess_images", "oversized: 7x7"),
        ]
    )
    counts = figures.reject_counts(rejects)
    assert counts.select("stage", "kind", "len").rows() == [
        ("preprocess_images", "oversized", 3),
        ("preprocess_images", "missing file", 1),
        ("ingest", "empty report", 2),
        ("ingest", "duplicate image_id", 1),
    ]
    pooled = figures.reject_counts(rejects, max_bars=3)
    assert pooled.select("stage", "kind", "len", "pooled").rows() == [
        ("preprocess_images", "oversized", 3, False),
        ("preprocess_images", "missing file", 1, False),
        ("ingest", "2 other reasons", 3, True),
    ]


def test_rejects_figure_says_when_nothing_was_rejected(tmp_path, caplog):
    empty = tmp_path / "rejects.parquet"
    write_table(_rejects([]), "rejects", empty)
    full = tmp_path / "more.parquet"
    write_table(
        _rejects([("ingest", "empty report: x"), ("generate_reports", "no frontal image to query with")]),
        "rejects",
        full,
    )
    with caplog.at_level("INFO", logger="mtcxr.summary.figures"):
        figures.rejects_figure({"data/rejects.parquet": str(empty)}, str(tmp_path / "none.png"))
        figures.rejects_figure({"a": str(empty), "b": str(full)}, str(tmp_path / "some.png"))
    assert [r.getMessage() for r in caplog.records] == [
        "no item was rejected (1 tables read)",
        "2 rejected items in 2 tables",
    ]
    assert Image.open(tmp_path / "none.png").size[0] > 600 and Image.open(tmp_path / "some.png").size[0] > 600


def test_examples_mix_hits_and_misses_by_seed():
    # Queries x variants (zeroshot, multitask): own report in the top k.
    hits = np.array([[1, 1], [1, 1], [0, 0], [0, 0], [0, 1], [0, 1], [1, 0], [1, 1]], dtype=bool)
    chosen = figures.choose_examples(hits, 4, seed=0)
    patterns = [tuple(hits[i]) for i in chosen]
    # Disagreements first (heads help, then hurt), then found by both, then by neither.
    assert patterns == [(False, True), (True, False), (True, True), (False, False)]
    assert figures.choose_examples(hits, 4, seed=0) == chosen and len(set(chosen)) == 4
    assert sorted(figures.choose_examples(hits, 20, seed=1)) == list(range(len(hits)))  # n larger: every query once
    assert (
        len({tuple(figures.choose_examples(hits, 4, seed=s)) for s in range(8)}) > 1
    )  # the seed draws within a pattern


def _index(folder: Path, images: np.ndarray, texts: np.ndarray, studies: list[str], text_studies: list[str]) -> None:
    folder.mkdir(parents=True)
    meta = {"backbone": "b", "variant": "v", "normalized": True}
    write_embeddings(
        folder / "images.parquet",
        "image_id",
        [f"{s}-pa" for s in studies],
        images.astype(np.float32),
        meta,
        {"study_id": studies, "view": ["PA"] * len(studies)},
    )
    write_embeddings(
        folder / "texts.parquet",
        "text_id",
        [f"t{i:07d}" for i in range(len(texts))],
        texts.astype(np.float32),
        meta,
        {"study_ids": text_studies, "report": [f"report of {s}" for s in text_studies]},
    )


def test_ranked_reports_give_the_own_reports_rank(tmp_path):
    rng = np.random.default_rng(0)
    images, texts = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    studies = ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]
    text_studies = ["s0 s4", "s1", "s2 s5", "s3 s6"]  # deduplicated reports shared by studies
    _index(tmp_path / "index", images, texts, studies, text_studies)
    ranked = figures._ranked_reports(str(tmp_path / "index"), top_k=3, block=2)
    scores = images.astype(np.float32) @ texts.astype(np.float32).T
    own = [0, 1, 2, 3, 0, 2, 3]
    assert ranked["own"].tolist() == own
    for i in range(7):
        order = list(np.argsort(-scores[i], kind="stable"))
        assert ranked["top"][i].tolist() == order[:3]
        assert ranked["rank"][i] == order.index(own[i]) + 1


def test_clinical_precision_figure_draws_the_precision_k_rows(tmp_path):
    rows = []
    for variant, n_seeds, sd in (("zeroshot", None, None), ("multitask", 2, 0.01)):
        for task in ("i2t", "t2i"):
            for metric, value in (("precision_normal", 0.9), ("precision_abnormal", 0.7), ("balanced_precision", 0.8)):
                ci = (None, None) if n_seeds and metric != "balanced_precision" else (value - 0.05, value + 0.05)
                rows.append(
                    {
                        "backbone": "demo",
                        "variant": variant,
                        "seed": None,
                        "task": task,
                        "metric": metric,
                        "k": 5,
                        "value": value,
                        "ci_low": ci[0],
                        "ci_high": ci[1],
                        "sd": sd,
                        "n_seeds": n_seeds,
                        "n_queries": 40 if metric == "precision_normal" else 60,
                    }
                )
    summary = tmp_path / "summary.parquet"
    write_table(pl.DataFrame(rows, schema=CONTRACTS["metrics"]), "metrics", summary)
    figures.clinical_precision_figure(str(summary), "demo", 5, str(tmp_path / "cp.png"))
    assert Image.open(tmp_path / "cp.png").width > 700
    # No rows at that k (or a one-class test split): a small figure that says so, not a crash.
    figures.clinical_precision_figure(str(summary), "demo", 10, str(tmp_path / "no.png"))
    assert Image.open(tmp_path / "no.png").height < Image.open(tmp_path / "cp.png").height


def render_caption(name: str, protocols: list[str]) -> str:
    """A caption of workflow/report rendered as `snakemake --report` renders it (Jinja with trim_blocks,
    then docutils), for the tiny config with `evaluate.protocols` set."""
    import types

    import jinja2
    from docutils.core import publish_parts

    config = run_config(
        default_file=REPO / "config.yaml",
        configfiles=[REPO / "tests/configs/tiny.yaml"],
        command_line={"evaluate": {"protocols": protocols}},
        schema_file=REPO / "workflow/schemas/config.schema.yaml",
    )
    snakemake = types.SimpleNamespace(
        config=config, wildcards=types.SimpleNamespace(backbone="demo"), params=types.SimpleNamespace(k=5)
    )
    text = jinja2.Environment(trim_blocks=True).from_string((REPO / f"workflow/report/{name}.rst").read_text())
    rst = text.render(snakemake=snakemake, categories={}, files=[])
    html = publish_parts(rst, writer="html", settings_overrides={"halt_level": 2})["body"]
    return " ".join(re.sub(r"<[^>]+>", "", html).split())


def test_captions_say_what_evaluate_protocols_left_out():
    """Without mtcxr the captions do not describe bars that are not drawn; with it they are unchanged."""
    recall = render_caption("recall", ["cxr_clip", "label_5x200"])
    assert (
        "This run's evaluate.protocols (cxr_clip, label_5x200) leaves out mtcxr: the image → report panel shows "
        "CXR-CLIP's protocol instead (one frontal image per study, reports deduplicated by exact text), and a panel "
        "without rows says so."
    ) in recall
    assert "leaves out mtcxr: a panel without rows says so." in render_caption("recall", ["label_5x200"])
    for name in ("clinical_precision", "finding_precision"):
        assert render_caption(name, ["cxr_clip"]).startswith("Not computed in this run: evaluate.protocols leaves out")
        assert "Not computed" not in render_caption(name, ["mtcxr", "cxr_clip"])
    assert "leaves out" not in render_caption("recall", ["mtcxr", "cxr_clip", "label_5x200"])
    front = render_caption("workflow", ["cxr_clip", "label_5x200"])
    assert (
        "Test-split retrieval by the published protocols only (cxr_clip, label_5x200; mtcxr's own recall and "
        "clinical precision not computed), 95% bootstrap CIs (50 resamples;"
    ) in front
    assert "Test-split recall at k = 1, 5, 10 and clinical precision at k = 5" in render_caption("workflow", ["mtcxr"])


# --- the built report, in a browser ---------------------------------------------------------------


def declared_report_names() -> list[str]:
    """A regex per report(...) output declared in workflow/rules/*.smk: the file name, wildcards as [^/]+."""
    names = []
    for rules in sorted((REPO / "workflow/rules").glob("*.smk")):
        for path in re.findall(r'report\(\s*(?:expand\(\s*)?f"([^"]+)"', rules.read_text()):
            name = re.escape(path.rsplit("/", 1)[-1])
            names.append(re.sub(r"\\\{\\\{\w+\\\}\\\}", "[^/]+", name))
    return names


def test_every_report_output_is_found_by_the_declaration_scan():
    names = declared_report_names()
    assert len(names) >= 15
    for file in (
        "clinical_precision_demo.png",
        "retrieval_examples_demo.png",
        "rejects.png",
        "summary.html",
        "training_demo.png",
        "tsne_demo.png",
        "summary.csv",
        "zeroshot_auc.png",
        "zeroshot_auc.csv",
    ):
        assert any(re.fullmatch(name, file) for name in names), file


def embedded(html: Path, name: str) -> dict:
    """One of the report's embedded data objects (`<script id="results"> var results = {...}; </script>`)."""
    script = name.replace("_", "-")
    found = re.search(
        rf'<script id="{script}">\s*var {name} = (.*?);\s*</script>', html.read_text(encoding="utf-8"), re.S
    )
    assert found, f"no `var {name}` in {html}"
    return json.loads(found.group(1))


def expected_files(results: Path, config: dict) -> set[str]:
    """Every figure and table the tiny config has data for, as registered in the report."""
    backbones = list(config["backbones"]) + list(config.get("finetune", {}).get("backbones", {}))
    files = {
        f"figures/{name}_{backbone}.png"
        for backbone in backbones
        for name in ("clinical_precision", "retrieval_examples", "training", "tsne", "finding_precision")
    }
    files |= {
        "figures/recall_at_k.png",
        "figures/xtra_auc.png",
        "figures/generation.png",
        "figures/rejects.png",
        "figures/zeroshot_auc.png",
        "metrics/summary.html",
        "metrics/summary.csv",
        "metrics/paired_vs_zeroshot.csv",
        "metrics/xtra_auc.csv",
        "metrics/finding_precision.csv",
        "metrics/zeroshot_auc.csv",
        "metrics/generation.csv",
    }
    return {str(results / file) for file in files}


@pytest.mark.slow
def test_report_registers_every_figure_with_a_caption(tiny_report):
    results, html, config = tiny_report
    registered = embedded(html, "results")
    assert set(registered) == expected_files(results, config)
    names = declared_report_names()
    for entry in registered.values():  # each registered file is a declared report() output, and back
        assert any(re.fullmatch(name, entry["name"]) for name in names), entry["name"]
        assert len(re.sub(r"<[^>]+>", "", entry["caption"]).split()) > 20, f"{entry['name']}: caption too short"
    for name in names:
        assert any(re.fullmatch(name, entry["name"]) for entry in registered.values()), f"{name} not in the report"
    categories = embedded(html, "categories")
    backbones = list(config["backbones"]) + list(config.get("finetune", {}).get("backbones", {}))
    for backbone in backbones:
        assert sorted(Path(p).name for p in categories["Retrieval"][backbone]) == [
            f"clinical_precision_{backbone}.png",
            f"retrieval_examples_{backbone}.png",
        ]
    assert [Path(p).name for p in categories["Data"]["Other"]] == ["rejects.png"]
    assert [Path(p).name for p in categories["Zero-shot classification"]["Other"]] == ["zeroshot_auc.png"]
    # The run's own settings in the study description.
    description = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", embedded(html, "workflow_desc")))
    for text in (
        f"{config['dataset']['synthetic']['n_studies']} studies",
        "once per seed (0, 1;",
        f"clinical precision at k = {config['evaluate']['precision_k']}",
        f"({config['evaluate']['bootstrap']} resamples",
    ):
        assert text in description, text


def distinct_colours(png: Path) -> tuple[int, float]:
    """(number of distinct colours, share of the most common one) of a screenshot."""
    image = Image.open(png).convert("RGB")
    counts = image.getcolors(maxcolors=image.width * image.height)
    return len(counts), max(n for n, _ in counts) / (image.width * image.height)


@pytest.mark.slow
def test_report_renders_in_chromium(tiny_report, tmp_path):
    browser = report.find_browser()
    if browser is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium, as .ci/run does)")
    results, html, config = tiny_report
    seen = report.check_in_browser(html, tmp_path, size=WINDOW, browser=browser)
    assert seen["errors"] == [] and seen["console_errors"] == []

    # The landing page: the study description, its title in view (the report cuts what overflows above).
    assert seen["landing"].startswith("mtcxr: chest X-ray image ↔ report retrieval")
    assert "The synthetic demo: 160 studies of 120 patients" in seen["landing"]
    assert 0 <= seen["landing_title"]["top"] < seen["window"]["height"]

    # Every registered result: listed in its subcategory, its caption shown, its figure or page rendered.
    registered = embedded(html, "results")
    categories = embedded(html, "categories")
    for category, subcategories in categories.items():
        for subcategory, paths in subcategories.items():
            assert seen["categories"][category][subcategory] == [registered[p]["name"] for p in paths]
    assert set(seen["results"]) == set(registered)
    for path, found in seen["results"].items():
        assert found["caption_shown"], f"{found['name']}: caption not shown"
        if found["mime"] == "image/png":
            natural = Image.open(path).size
            assert (found["width"], found["height"]) == natural, f"{found['name']} did not load"
            box = found["box"]
            # The whole figure can be seen: the report centres content and cuts what overflows above or left.
            assert box["top"] >= 0 and box["left"] >= 0, f"{found['name']} is cut off: {box}"
            # and not shrunk much below its own width (the navigation takes the window's left quarter).
            assert box["width"] >= min(natural[0], 800), f"{found['name']} shown at {box['width']} px"
    page = seen["results"][str(results / "metrics/summary.html")]
    assert page["frame"] and page["tables"] >= 5
    assert page["headings"][:2] == ["mtcxr results", "Backbone demo"]

    # Screenshots as a reader sees them: not blank (a blank or still-loading page is one colour with a few
    # dozen in its text), many colours (a figure, the navigation, text).
    landing, figure = tmp_path / "landing.png", tmp_path / "figure.png"
    report.screenshot(html, landing, tmp_path, size=WINDOW, browser=browser)
    report.screenshot(
        html, figure, tmp_path, show=str(results / "figures/clinical_precision_demo.png"), size=WINDOW, browser=browser
    )
    for png in (landing, figure):
        assert Image.open(png).size == WINDOW
        colours, dominant = distinct_colours(png)
        assert colours > 500 and dominant < 0.97, f"{png.name}: {colours} colours, {dominant:.0%} one colour"
