"""End to end on each real dataset layout: the whole workflow, through Snakemake, with the demo backbone.

Each miniature tree holds the planted faults of the reader tests, image faults that only
preprocessing can see, and enough good synthetic studies (laid out the way the dataset stores
them) to train and evaluate. Every run must put each planted fault in rejects, with its reason,
and carry every other image and report through to the embeddings and the metrics.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import (
    CHEXPERT_HEADER,
    REAL_IU,
    IuExtra,
    MimicExtra,
    write_iu_tree,
    write_manifest_tree,
    write_mimic_tree,
)
from PIL import Image
from tiny_workflow import SIDE_RUNS, Running, copy_demo_backbone

from mtcxr.data.datasets.synthetic import read_synthetic
from mtcxr.embedding_io import read_embeddings
from mtcxr.tables import CHEXPERT_DISPLAY, CHEXPERT_LABELS, read_table

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------------------------
# Building blocks


def synthetic_source(tmp_path: Path, n_studies: int = 60):
    """Synthetic studies (images as 64 px PNGs, reports, true labels) to lay out as a real dataset."""
    cfg = {
        "synthetic": {
            "n_studies": n_studies,
            "n_patients": n_studies * 3 // 4,
            "image_size": 64,
            "lateral_fraction": 0.3,
        },
        "split_fractions": {"train": 0.6, "validate": 0.1, "test": 0.3},
    }
    return read_synthetic(cfg, "both", 0, str(tmp_path / "synthetic-source"))


def encoded(pixels: np.ndarray, fmt: str = "JPEG", mode: str = "L") -> bytes:
    """Gray uint8 pixels as an image file of `fmt` in `mode` (16-bit modes hold a 12-bit range, as DICOM exports do)."""
    if mode == "I;16":
        image = Image.fromarray(pixels.astype(np.uint16) * 16 + 100)
    elif mode == "P":
        image = Image.fromarray(pixels, mode="L").convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        image = Image.fromarray(pixels, mode="L").convert(mode)
    # PNG at zlib level 1: any level decodes alike, and the default (6) took half a minute on the real
    # radiographs of test_manifest_with_real_iu_images_end_to_end.
    options = {"JPEG": {"quality": 95}, "PNG": {"compress_level": 1}}.get(fmt, {})
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def file_pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


NOT_AN_IMAGE = b"this file is a text file, not an image\n"
OVERSIZED = encoded(np.full((400, 400), 128, np.uint8))  # 160,000 px against max_pixels 100,000


STUDY_TARGETS = ("metrics/summary.md", "figures/rejects.png")


@dataclass
class Layout:
    """A dataset tree laid out for one end-to-end run: its `dataset:` block, config overrides, and what its
    test compares the run's tables against."""

    dataset: dict
    overrides: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)


def start_study(folder: Path, layout: Layout, tiny_results: Path) -> Running:
    """Start the workflow on `layout` with the tiny test settings as far as the checks below read (the
    summary, with the retrieval and generation metrics it is made of), from the shared run's demo backbone;
    it writes under `folder/results`."""
    assert "demo_backbone" not in layout.overrides and "seed" not in layout.overrides  # the backbone is tiny.yaml's
    results = folder / "results"
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config["dataset"] = layout.dataset
    config["results"] = str(results)
    config["images"]["max_pixels"] = 100_000
    # The zero-shot variant alone: trained heads, seeds and X-TRA run in tests/test_workflow.py, and a
    # dataset's layout changes none of them (the miniature trees hold too few train patients for X-TRA).
    config["variants"] = {"zeroshot": config["variants"]["zeroshot"]}
    config["xtra"] = {"variants": []}
    config["finetune"] = {"backbones": {}}  # fine-tuning runs in tests/test_workflow.py
    # One shard, as the shared run: test_mimic_cxr_tree_end_to_end's run alone has two, for its rejects.
    config["images"]["shards"] = 1
    for section, values in layout.overrides.items():
        config[section].update(values)
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    copy_demo_backbone(tiny_results, results)
    # Not rule `all`: summarize's outputs, and the one figure whose input only these runs give its shape
    # (rejects: the shared run has none). The other figures draw tables and cached pixels that every
    # dataset gives the same shape, labels with unknown and uncertain findings included, and the shared
    # run draws them (tests/test_workflow.py).
    targets = [str(results / name) for name in STUDY_TARGETS]
    # One core each: the layouts' runs go side by side (conftest.side_runs).
    return Running(["--cores", "1", "--nolock", *targets, "--configfile", str(config_path)], REPO, None)


def start_layout(build):
    """A side-run starter (tiny_workflow.SIDE_RUNS) for the layout `build` writes."""

    def start(folder: Path, tiny_results: Path) -> tuple[tuple[Layout, Path], Running] | None:
        layout = build(folder)
        return None if layout is None else ((layout, folder / "results"), start_study(folder, layout, tiny_results))

    return start


def finished(side_runs, name: str) -> tuple[Layout, Path]:
    """The layout and results folder of a run that must have ended well."""
    (layout, results), done = side_runs.result(name)
    assert done.returncode == 0, done.stderr[-4000:]
    return layout, results


def all_rejects(results: Path) -> pl.DataFrame:
    tables = [read_table(results / "data/rejects.parquet", "rejects")]
    tables += [read_table(path, "rejects") for path in sorted((results / "data/pixels").glob("rejects-*.parquet"))]
    return pl.concat(tables)


def check_carried_through(results: Path, preprocess_rejects: set[str]) -> pl.DataFrame:
    """Every ingested image but the preprocess rejects is cached and embedded; every report is embedded;
    the metrics query every test frontal image. Returns the images table."""
    images = read_table(results / "data/images.parquet", "images")
    studies = read_table(results / "data/studies.parquet", "studies")
    shards = sorted((results / "data/pixels").glob("shard-*.parquet"))
    cached = set(pl.concat([pl.read_parquet(path, columns=["image_id"]) for path in shards])["image_id"])
    assert preprocess_rejects <= set(images["image_id"])
    assert cached == set(images["image_id"]) - preprocess_rejects

    embedded, vectors, meta = read_embeddings(
        sorted((results / "embeddings/demo").glob("images-*.parquet")), "image_id"
    )
    assert set(embedded) == cached and len(embedded) == len(cached)
    assert meta["spec"] == "demo" and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    text_ids, _, _ = read_embeddings(results / "embeddings/demo/texts.parquet", "study_id")
    assert sorted(text_ids) == sorted(studies["study_id"])

    summary = pl.read_csv(results / "metrics/summary.csv")
    assert set(summary["variant"].drop_nulls()) == {"zeroshot"}
    test_frontal = images.filter(
        (pl.col("split") == "test") & pl.col("view").is_in(["PA", "AP"]) & pl.col("image_id").is_in(list(cached))
    )
    i2t = summary.filter((pl.col("task") == "i2t") & (pl.col("metric") == "recall"))
    assert set(i2t["n_queries"]) == {test_frontal.height} and test_frontal.height > 0
    assert (i2t["value"].is_between(0, 1)).all()
    # Report generation: a test study it cannot score is a reject with a reason, never dropped silently.
    generation_rejects = read_table(results / "generation/rejects.parquet", "rejects")
    test_studies = set(studies.filter(pl.col("split") == "test")["study_id"])
    assert set(generation_rejects["item"]) <= test_studies
    known = ("no findings text", "the findings text holds only", "no frontal image", "every frontal image was rejected")
    assert all(reason.startswith(known) for reason in generation_rejects["reason"])
    scored = read_table(results / "metrics/generation.parquet", "generation_metrics")
    assert set(scored["n_studies"]) == {len(test_studies) - generation_rejects.height}
    n_rejects = all_rejects(results).height + generation_rejects.height
    assert f"## Rejected items: {n_rejects}" in (results / "metrics/summary.md").read_text()
    return images


def check_reasons(rejects: pl.DataFrame, expected: dict[tuple[str, str], str]) -> None:
    """`rejects` holds exactly the (item, stage) pairs of `expected`, each reason containing its text."""
    found = {(row["item"], row["stage"]): row["reason"] for row in rejects.iter_rows(named=True)}
    assert sorted(found) == sorted(expected)
    for key, text in expected.items():
        assert text in found[key], (key, found[key])


PLANTED_MIMIC_REJECTS = {
    ("d09", "ingest"): "duplicate image_id",
    ("d11", "ingest"): "no row in mimic-cxr-2.0.0-split.csv",
    ("s50000004", "ingest"): "report missing from mimic-cxr-reports.zip",
    ("s50000005", "ingest"): "empty report",
    ("s50000006", "ingest"): "no image of a view in dataset.views",
    ("d03", "preprocess_images"): "truncated or corrupt image",
    ("d04", "preprocess_images"): "missing file",
}


# ---------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG


def mimic_report(findings: str | None, impression: str | None) -> str:
    text = "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  ___ with cough\n\n"
    if findings:
        text += f" FINDINGS:\n\n {findings}\n\n"
    if impression:
        text += f" IMPRESSION:\n\n {impression}\n"
    return text


def mimic_layout(tmp_path: Path) -> Layout:
    source = synthetic_source(tmp_path)
    subject = {p: str(12_000_000 + i) for i, p in enumerate(source.studies["patient_id"].unique(maintain_order=True))}
    study = {s: str(52_000_000 + i) for i, s in enumerate(source.studies["study_id"])}
    extra = MimicExtra()
    for row in source.images.iter_rows(named=True):
        dicom = f"x{study[row['study_id']]}{row['view'][0].lower()}"
        extra.metadata.append((dicom, subject[row["patient_id"]], study[row["study_id"]], row["view"], 64, 64))
        extra.files[dicom] = encoded(file_pixels(row["path"]))
    for row in source.studies.iter_rows(named=True):
        extra.split[subject[row["patient_id"]]] = row["split"]
        extra.reports[study[row["study_id"]]] = mimic_report(row["findings"], row["impression"])
    by_name = {CHEXPERT_DISPLAY[name]: name for name in CHEXPERT_LABELS}
    for row in source.labels.iter_rows(named=True):
        patient = source.studies.filter(pl.col("study_id") == row["study_id"])["patient_id"][0]
        values = [None if row[by_name[h]] is None else float(row[by_name[h]]) for h in CHEXPERT_HEADER[2:]]
        extra.chexpert.append([subject[patient], study[row["study_id"]], *values])
    # Faults only decoding can see, on three good frontal images.
    frontal = [m[0] for m in extra.metadata if m[3] in ("PA", "AP")]
    faults = dict(zip(frontal[:3], (b"", NOT_AN_IMAGE, OVERSIZED)))
    extra.files.update(faults)
    root = write_mimic_tree(tmp_path / "mimic", images=True, extra=extra)

    # Two shards, the suite's only run with more than one: its preprocess rejects land in both, so every
    # shard's rejects must reach the rejects checks and summary.md's count.
    facts = {"source": source, "study": study, "faults": faults, "frontal": frontal}
    return Layout({"kind": "mimic_cxr", "root": str(root)}, {"images": {"shards": 2}}, facts)


def test_mimic_cxr_tree_end_to_end(side_runs):
    layout, results = finished(side_runs, "mimic_cxr")
    source, study, faults, frontal = (layout.facts[key] for key in ("source", "study", "faults", "frontal"))
    shards = sorted((results / "data/pixels").glob("rejects-*.parquet"))
    assert len(shards) == 2 and all(read_table(path, "rejects").height for path in shards)

    reasons = ["empty file (0 bytes)", "not a readable image", "oversized: 400x400 exceeds the pixel limit of 100000"]
    expected = {**PLANTED_MIMIC_REJECTS, **{(d, "preprocess_images"): r for d, r in zip(faults, reasons)}}
    check_reasons(all_rejects(results), expected)
    images = check_carried_through(results, {"d03", "d04", *faults})
    assert set(images["image_id"]) == {"d01", "d03", "d04", "d10", *frontal}

    # Every synthetic study arrives with its report text and its CheXpert labels unchanged.
    studies = read_table(results / "data/studies.parquet", "studies")
    source_reports = {f"s{study[s]}": r for s, r in source.studies.select("study_id", "report").iter_rows()}
    ingested = dict(
        studies.filter(pl.col("study_id").is_in(list(source_reports))).select("study_id", "report").iter_rows()
    )
    assert ingested == source_reports
    labels = read_table(results / "labels/labels.parquet", "labels")
    truth = source.labels.with_columns(study_id=pl.format("s{}", pl.col("study_id").replace_strict(study)))
    got = labels.join(truth.select("study_id"), on="study_id").sort("study_id")
    assert got.select(CHEXPERT_LABELS).rows() == truth.sort("study_id").select(CHEXPERT_LABELS).rows()
    assert set(got["source"]) == {"dataset"}


# ---------------------------------------------------------------------------------------------
# IU X-ray (Kaggle layout)


def iu_layout(tmp_path: Path) -> Layout:
    source = synthetic_source(tmp_path)
    extra = IuExtra()
    for i, row in enumerate(source.studies.iter_rows(named=True)):
        uid = str(1000 + i)
        frontal_view = source.images.filter((pl.col("study_id") == row["study_id"]) & (pl.col("view") != "LATERAL"))
        exam = "AP portable chest" if frontal_view["view"][0] == "AP" else "PA and lateral chest"
        extra.reports.append([uid, exam, row["findings"] or "", row["impression"] or ""])
        for image in source.images.filter(pl.col("study_id") == row["study_id"]).iter_rows(named=True):
            name = f"{uid}_IM-{i:04d}-{1001 if image['view'] != 'LATERAL' else 2001}.dcm.png"
            extra.projections.append([uid, name, "Lateral" if image["view"] == "LATERAL" else "Frontal"])
            extra.files[name] = encoded(file_pixels(image["path"]), "PNG")
    extra.files["1003_IM-0003-1001.dcm.png"] = NOT_AN_IMAGE
    root = write_iu_tree(tmp_path / "iu", extra=extra)

    split = {"train": 0.6, "validate": 0.1, "test": 0.3}
    return Layout(
        {"kind": "iu_xray", "root": str(root), "split_fractions": split}, facts={"source": source, "extra": extra}
    )


def test_iu_xray_tree_end_to_end(side_runs):
    layout, results = finished(side_runs, "iu_xray")
    source, extra = layout.facts["source"], layout.facts["extra"]

    check_reasons(
        all_rejects(results),
        {
            ("3", "ingest"): "empty report",
            ("4", "ingest"): "no image of a view in dataset.views",
            ("5", "ingest"): "no image listed for this study",
            ("6_IM-2192-1001.dcm.png", "ingest"): "duplicate image_id",
            ("99_IM-9999-1001.dcm.png", "ingest"): "no report for its study 99",
            ("6_IM-2192-1001.dcm.png", "preprocess_images"): "missing file",
            ("1003_IM-0003-1001.dcm.png", "preprocess_images"): "not a readable image",
        },
    )
    images = check_carried_through(results, {"6_IM-2192-1001.dcm.png", "1003_IM-0003-1001.dcm.png"})
    frontal_files = {name for _, name, projection in extra.projections if projection == "Frontal"}
    assert set(images["image_id"]) == {
        "1_IM-0001-4001.dcm.png",
        "2_IM-0652-1001.dcm.png",
        "6_IM-2192-1001.dcm.png",
        *frontal_files,
    }
    studies = read_table(results / "data/studies.parquet", "studies")
    assert studies.height == 3 + source.studies.height  # planted 1, 2, 6 and every synthetic study
    assert studies.group_by("patient_id").agg(pl.col("split").n_unique())["split"].max() == 1


# ---------------------------------------------------------------------------------------------
# Manifest of mixed formats and modes

FORMATS = [  # (suffix, PIL format, mode)
    ("png", "PNG", "L"),
    ("jpg", "JPEG", "L"),
    ("jpg", "JPEG", "RGB"),
    ("png", "PNG", "RGB"),
    ("png", "PNG", "RGBA"),
    ("png", "PNG", "P"),
    ("png", "PNG", "I;16"),
    ("png", "PNG", "LA"),
    ("tif", "TIFF", "L"),
    ("tif", "TIFF", "I;16"),
    ("bmp", "BMP", "RGB"),
    ("webp", "WEBP", "RGB"),
]


def mixed_manifest(tmp_path: Path, studies: pl.DataFrame, images: pl.DataFrame, read_pixels) -> tuple[list, dict]:
    """Manifest rows and files: each image stored in the next of FORMATS, so every format and mode is used."""
    rows, files = [], {}
    for i, image in enumerate(images.iter_rows(named=True)):
        study = studies.filter(pl.col("study_id") == image["study_id"]).row(0, named=True)
        suffix, fmt, mode = FORMATS[i % len(FORMATS)]
        name = f"mixed/{i:04d}-{mode.replace(';', '')}.{suffix}"
        files[name] = encoded(read_pixels(image["path"]), fmt, mode)
        rows.append(
            [
                name,
                study["study_id"],
                study["patient_id"],
                study["split"],
                image["view"],
                study["findings"] or "",
                study["impression"] or "",
                "",
                "",
                "",
            ]
        )
    return rows, files


def check_mixed_formats_cached(results: Path, manifest_rows: list, read_pixels, sources: list[str]) -> None:
    """Each cached image of the mixed set shows its source: pixel correlation near 1 whatever the format
    (16-bit images are windowed, so values differ by an affine map; JPEG and palettes add a little noise)."""
    pixels = pl.concat([pl.read_parquet(p) for p in sorted((results / "data/pixels").glob("shard-*.parquet"))])
    cached = dict(pixels.select("image_id", "png").iter_rows())
    for row, source in zip(manifest_rows, sources):
        image = np.asarray(Image.open(io.BytesIO(cached[row[0]])), dtype=np.float32)
        reference = Image.fromarray(read_pixels(source)).resize(image.shape[::-1], Image.Resampling.BILINEAR)
        correlation = np.corrcoef(image.ravel(), np.asarray(reference, dtype=np.float32).ravel())[0, 1]
        assert correlation > 0.97, (row[0], correlation)


def real_iu_rows(tmp_path: Path) -> tuple[list, dict, dict]:
    """The real IU X-ray frontal radiographs of ../shared/data, each re-saved in every format and mode of
    FORMATS, with their real reports, as test studies: (manifest rows, files, facts); nothing where absent."""
    if not (REAL_IU / "indiana_reports.csv").is_file():
        return [], {}, {}
    from mtcxr.data.datasets.iu_xray import read_iu_xray

    real = read_iu_xray({"root": str(REAL_IU), "views": ["PA", "AP"]}, "both", 0)
    real_images = real.images.filter(pl.col("width").is_not_null()).sort("image_id")  # the files present
    real_studies = real.studies.filter(pl.col("study_id").is_in(real_images["study_id"].to_list()))
    real_studies = real_studies.with_columns(split=pl.lit("test"), patient_id=pl.format("iu-{}", "patient_id"))
    assert real_images.height >= 1 and real_studies.height >= 1
    formats = pl.concat([real_images.with_columns(copy=pl.lit(i)) for i in range(len(FORMATS))]).sort(
        "copy", "image_id"
    )
    rows, files = mixed_manifest(tmp_path, real_studies, formats, file_pixels)
    rows = [[f"real/{row[0]}", *row[1:]] for row in rows]
    files = {f"real/{name}": content for name, content in files.items()}
    facts = {"real_rows": rows, "real_images": real_images, "real_studies": real_studies, "formats": formats}
    return rows, files, facts


def manifest_layout(tmp_path: Path) -> Layout:
    """One manifest for both manifest tests: the planted faults, the synthetic frontal images stored in every
    format and mode, and (where ../shared/data has them) the real IU X-ray radiographs in every format too.
    One run instead of two saves a whole study's jobs (about 100 CPU s of the suite); real radiographs are
    up to 6 megapixels, hence max_pixels."""
    source = synthetic_source(tmp_path)
    frontal = source.images.filter(pl.col("view") != "LATERAL")
    rows, files = mixed_manifest(tmp_path, source.studies, frontal, file_pixels)
    real_rows, real_files, real_facts = real_iu_rows(tmp_path)
    manifest = write_manifest_tree(
        tmp_path / "collection", extra_rows=rows + real_rows, extra_files={**files, **real_files}
    )
    facts = {"rows": rows, "frontal": frontal, "folder": manifest.parent, **real_facts}
    return Layout({"kind": "manifest", "manifest": str(manifest)}, {"images": {"max_pixels": 60_000_000}}, facts)


def test_manifest_of_mixed_formats_end_to_end(side_runs):
    layout, results = finished(side_runs, "manifest")
    rows, frontal, folder = (layout.facts[key] for key in ("rows", "frontal", "folder"))
    check_reasons(
        all_rejects(results),
        {
            ("S4", "ingest"): "empty report",
            ("S8", "ingest"): "rows of this study disagree on findings",
            ("S9", "ingest"): "no image of a view in dataset.views",
            ("images/e.png", "ingest"): "duplicate image_id",
            ("row 4", "ingest"): "blank image_path on row 4",
            ("images/f.png", "preprocess_images"): "missing file",
        },
    )
    images = check_carried_through(results, {"images/f.png"})
    planted = {"images/a.png", f"{folder}/images/c.png", "images/e.png", "images/f.png"}
    real = {row[0] for row in layout.facts.get("real_rows", [])}
    assert set(images["image_id"]) == planted | {row[0] for row in rows} | real
    check_mixed_formats_cached(results, rows, file_pixels, frontal["path"].to_list())


@pytest.mark.realdata
def test_manifest_with_real_iu_images_end_to_end(side_runs):
    layout, results = finished(side_runs, "manifest")
    if "real_rows" not in layout.facts:
        pytest.skip(
            f"real IU X-ray data not found at {REAL_IU} (the project's shared/data folder beside the repository)"
        )
    rows, real_images, real_studies, formats = (
        layout.facts[key] for key in ("real_rows", "real_images", "real_studies", "formats")
    )

    real_ids = {row[0] for row in rows}
    rejects = all_rejects(results)
    assert not set(rejects["item"]) & real_ids
    images = read_table(results / "data/images.parquet", "images")
    assert real_ids <= set(images["image_id"]) and len(real_ids) == real_images.height * len(FORMATS)
    check_mixed_formats_cached(results, rows, file_pixels, formats["path"].to_list())
    studies = read_table(results / "data/studies.parquet", "studies")
    assert dict(
        studies.filter(pl.col("study_id").is_in(real_studies["study_id"].to_list()))
        .select("study_id", "report")
        .iter_rows()
    ) == dict(real_studies.select("study_id", "report").iter_rows())


# The layouts' runs, in the order they start: the trees that are quick to write first, so that their runs
# use the cores while the real radiographs are re-encoded in every format.
SIDE_RUNS.update(
    {
        "mimic_cxr": (("test_mimic_cxr_tree_end_to_end",), start_layout(mimic_layout)),
        "iu_xray": (("test_iu_xray_tree_end_to_end",), start_layout(iu_layout)),
        "manifest": (
            ("test_manifest_of_mixed_formats_end_to_end", "test_manifest_with_real_iu_images_end_to_end"),
            start_layout(manifest_layout),
        ),
    }
)
