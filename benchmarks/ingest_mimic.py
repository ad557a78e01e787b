"""Time the ingest stage on simulated MIMIC-CXR-JPG-sized metadata at several sizes, with its peak memory.

Builds, in a temporary folder, what ingest reads of MIMIC-CXR-JPG 2.x: at full size
377,110 image rows in `mimic-cxr-2.0.0-metadata.csv.gz`, the split and CheXpert CSVs
(gzipped), and `mimic-cxr-reports.zip` with 227,835 reports of 65,379 patients, in the
real reports' shapes (FINDINGS + IMPRESSION, IMPRESSION only, no headings). No images:
ingest never opens one. Then it runs the stage (`mtcxr.data.ingest.ingest`, which writes the
four tables) on each size in a fresh process and reads that process's peak RSS
(VmHWM), next to the RSS of the interpreter with every module ingest loads imported.

"Flat" is judged on the growth of the peak from the smallest to the largest size, set
against proportional growth (the smallest size's peak above the baseline, scaled by
the row count). It prints a Markdown table for benchmarks/datasets.md.

Usage: .venv/bin/python benchmarks/ingest_mimic.py [--scales 0.25 0.5 1.0] [--keep DIR]
(--keep builds the sets into DIR/scale-{s} once and reuses them; benchmarks/dry_run.py
uses them too.)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import polars as pl

IMAGES, STUDIES, PATIENTS = 377_110, 227_835, 65_379
VIEW_MIX = {"PA": 0.26, "AP": 0.39, "LATERAL": 0.22, "LL": 0.09, "": 0.03, "AP AXIAL": 0.01}
OBSERVATIONS = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
]
SENTENCES = [
    "The lungs are clear without focal consolidation.",
    "No pleural effusion or pneumothorax is seen.",
    "The cardiomediastinal silhouette is within normal limits.",
    "There is mild pulmonary vascular congestion.",
    "Small bilateral pleural effusions are noted with adjacent atelectasis.",
    "A right internal jugular line ends in the SVC.",
    "Moderate cardiomegaly is unchanged from ___.",
    "Retrocardiac opacity may reflect atelectasis or pneumonia.",
    "Osseous structures are intact.",
    "Endotracheal tube terminates 4 cm above the carina.",
]


def wrap(text: str, width: int = 76) -> str:
    """Hard-wrap like MIMIC's reports, one leading space per line."""
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = ""
        line = f"{line} {word}" if line else word
    return "\n".join(" " + part for part in lines + [line])


def report(rng: np.random.Generator) -> str:
    findings = wrap(" ".join(rng.choice(SENTENCES, size=rng.integers(3, 7))))
    impression = wrap(" ".join(rng.choice(SENTENCES, size=rng.integers(1, 3))))
    head = (
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
        " INDICATION:  ___ with dyspnea.\n\n COMPARISON:  ___.\n\n"
    )
    shape = rng.random()
    if shape < 0.6:
        return f"{head} FINDINGS:\n\n{findings}\n\n IMPRESSION:\n\n{impression}\n"
    if shape < 0.9:
        return f"{head} IMPRESSION:\n\n{impression}\n"
    return f"{head}{findings}\n\n{impression}\n"


def build(root: Path, scale: float, seed: int = 0) -> dict:
    """Write the simulated set under `root`; return its row counts."""
    rng = np.random.default_rng(seed)
    n_images, n_studies, n_patients = (max(1, round(n * scale)) for n in (IMAGES, STUDIES, PATIENTS))
    subjects = rng.choice(np.arange(10_000_000, 20_000_000), size=n_patients, replace=False)
    study_subject = np.sort(np.concatenate([subjects, rng.choice(subjects, size=n_studies - n_patients)]))
    study_numbers = rng.choice(np.arange(50_000_000, 60_000_000), size=n_studies, replace=False)
    image_study = np.sort(np.concatenate([np.arange(n_studies), rng.integers(0, n_studies, size=n_images - n_studies)]))
    views = rng.choice(list(VIEW_MIX), size=n_images, p=np.array(list(VIEW_MIX.values())) / sum(VIEW_MIX.values()))
    # 44 characters like MIMIC's own dicom_ids ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"), unique by the last group.
    groups = rng.integers(0, 2**32, size=(n_images, 4))
    dicom_ids = [f"{a:08x}-{b:08x}-{c:08x}-{d:08x}-{i:08x}" for i, (a, b, c, d) in enumerate(groups.tolist())]
    patient_split = dict(
        zip(subjects, rng.choice(["train", "validate", "test"], size=n_patients, p=[0.978, 0.008, 0.014]))
    )
    metadata = pl.DataFrame(
        {
            "dicom_id": dicom_ids,
            "subject_id": study_subject[image_study],
            "study_id": study_numbers[image_study],
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
            "ViewPosition": views,
            "Rows": rng.integers(2000, 3100, size=n_images),
            "Columns": rng.integers(2000, 3100, size=n_images),
            "StudyDate": 21800506,
            "StudyTime": 213014.531,
            "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
            "ViewCodeSequence_CodeMeaning": "postero-anterior",
            "PatientOrientationCodeSequence_CodeMeaning": "Erect",
        }
    )
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wb", compresslevel=6) as handle:
        metadata.write_csv(handle)
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wb", compresslevel=6) as handle:
        metadata.select(
            "dicom_id", "study_id", "subject_id", split=pl.col("subject_id").replace_strict(patient_split)
        ).write_csv(handle)
    labels = rng.choice([1.0, 0.0, -1.0, np.nan], size=(n_studies, len(OBSERVATIONS)), p=[0.1, 0.1, 0.05, 0.75])
    chexpert = pl.DataFrame({"subject_id": study_subject, "study_id": study_numbers}).with_columns(
        [pl.Series(name, labels[:, i], nan_to_null=True) for i, name in enumerate(OBSERVATIONS)]
    )
    with gzip.open(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "wb", compresslevel=6) as handle:
        chexpert.write_csv(handle)
    with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for subject, study in zip(study_subject, study_numbers):
            archive.writestr(f"files/p{str(subject)[:2]}/p{subject}/s{study}.txt", report(rng))
    return {"images": n_images, "studies": n_studies, "patients": n_patients}


def ensure_built(folder: Path, scale: float) -> dict:
    """Build the set of `scale` into `folder` unless a finished one is there; return its row counts."""
    done = folder / "built.json"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        # In a child, so that this process stays small while it starts the measuring ones.
        done.write_text(json.dumps(child("--build", str(folder), "--scale", str(scale))))
    return json.loads(done.read_text())


def peak_mib() -> float:
    """This process's peak resident set (VmHWM), MiB; unlike ru_maxrss it is not inherited across exec."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmHWM"].split()[0]) / 1024


def measure(root: Path) -> dict:
    """Run the ingest stage on `root` in this process; return seconds, peak RSS and output sizes."""
    import pyarrow.parquet  # noqa: F401  (ingest loads it to write row groups: part of the baseline)

    import mtcxr.data.datasets.mimic_cxr  # noqa: F401
    from mtcxr.data.ingest import ingest

    baseline = peak_mib()
    with tempfile.TemporaryDirectory() as out:
        paths = {name: f"{out}/{name}.parquet" for name in ("studies", "images", "rejects", "labels")}
        start = time.perf_counter()
        ingest(
            {"kind": "mimic_cxr", "root": str(root), "views": ["PA", "AP"]},
            "both",
            0,
            paths["studies"],
            paths["images"],
            paths["rejects"],
            paths["labels"],
            work_dir=out,
        )
        seconds = time.perf_counter() - start
        peak = peak_mib()
        tables = {name: pl.read_parquet(path) for name, path in paths.items()}
    return {
        "seconds": seconds,
        "baseline_mib": baseline,
        "peak_mib": peak,
        "tables_mib": {name: table.estimated_size("mb") for name, table in tables.items()},
        "rows": {name: table.height for name, table in tables.items()},
    }


def child(*flags: str) -> dict:
    """Run this script with `flags` in a fresh process; return the JSON it prints last."""
    run = subprocess.run([sys.executable, __file__, *flags], check=True, capture_output=True, text=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="fractions of MIMIC's size")
    parser.add_argument("--keep", type=Path, help="build the sets under this folder and keep them")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(args.build, args.scale)))
        return
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        results = []
        for scale in sorted(args.scales):
            counts = ensure_built(folder / f"scale-{scale}", scale)
            stats = child("--measure", str(folder / f"scale-{scale}"))
            results.append((scale, counts, stats))
            print(f"scale {scale}: {json.dumps(stats)}", file=sys.stderr)
    print("| scale | image rows | reports | time | peak RSS | above baseline | studies table | all four tables |")
    print("|---|---|---|---|---|---|---|---|")
    for scale, counts, stats in results:
        above = stats["peak_mib"] - stats["baseline_mib"]
        print(
            f"| {scale} | {counts['images']:,} | {counts['studies']:,} | {stats['seconds']:.1f} s | "
            f"{stats['peak_mib']:.0f} MiB | {above:.0f} MiB | {stats['tables_mib']['studies']:.0f} MiB | "
            f"{sum(stats['tables_mib'].values()):.0f} MiB |"
        )
    (_, small_counts, small_stats), (_, large_counts, large_stats) = results[0], results[-1]
    ratio = large_counts["images"] / small_counts["images"]
    above_small = small_stats["peak_mib"] - small_stats["baseline_mib"]
    print(
        f"\nbaseline (interpreter + imports) {large_stats['baseline_mib']:.0f} MiB; {ratio:.1f}x the rows: peak "
        f"+{large_stats['peak_mib'] - small_stats['peak_mib']:.0f} MiB, proportional growth would be "
        f"+{above_small * (ratio - 1):.0f} MiB; {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, polars {pl.__version__}"
    )


if __name__ == "__main__":
    main()
