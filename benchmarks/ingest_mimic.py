"""Time `read_mimic_cxr` on a simulated MIMIC-CXR-JPG-sized metadata set, and its peak memory.

Builds, in a temporary folder, what ingest reads of MIMIC-CXR-JPG 2.x at full size:
377,110 image rows in `mimic-cxr-2.0.0-metadata.csv.gz`, the split and CheXpert CSVs
(gzipped), and `mimic-cxr-reports.zip` with 227,835 reports of 65,379 patients, in the
real reports' shapes (FINDINGS + IMPRESSION, IMPRESSION only, no headings). No images:
ingest never opens one. Then it runs `read_mimic_cxr` in a fresh process, so that peak
RSS (resource.getrusage) counts ingest alone, and prints a line for the README.

Run at two scales (`--scale 0.25` and the default 1.0) to see that memory above the
interpreter's baseline follows the size of the tables, not anything larger.

Usage: .venv/bin/python benchmarks/ingest_mimic.py [--scale 1.0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import resource
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
    head = "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  ___ with dyspnea.\n\n COMPARISON:  ___.\n\n"
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
    dicom_ids = [f"{value:08x}-{i:08x}" for i, value in enumerate(rng.integers(0, 2**32, size=n_images))]
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


def measure(root: Path) -> dict:
    """Run read_mimic_cxr on `root` in this process; return seconds, peak RSS and table sizes."""
    from mtcxr.datasets.mimic_cxr import read_mimic_cxr

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = read_mimic_cxr({"root": str(root), "views": ["PA", "AP"]}, "both", 0)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tables = sum(table.estimated_size("mb") for table in (result.studies, result.images, result.rejects, result.labels))
    return {
        "seconds": seconds,
        "baseline_mib": baseline,
        "peak_mib": peak,
        "tables_mib": tables,
        "studies": result.studies.height,
        "images": result.images.height,
        "rejects": result.rejects.height,
        "labels": result.labels.height,
    }


def child(*flags: str) -> dict:
    """Run this script with `flags` in a fresh process; return the JSON it prints last.

    Building and measuring each run in a child of their own: Linux carries a process's peak RSS
    across exec, so a measuring child of a process that had built the set would inherit its peak.
    """
    run = subprocess.run([sys.executable, __file__, *flags], check=True, capture_output=True, text=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of MIMIC's size to simulate")
    parser.add_argument("--keep", type=Path, help="build into this folder and keep it")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(args.build, args.scale)))
        return
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        counts = child("--build", str(root), "--scale", str(args.scale))
        print(f"built {counts} in {time.perf_counter() - start:.0f} s under {root}", file=sys.stderr)
        stats = child("--measure", str(root))
    print(json.dumps(stats, indent=1))
    print(
        f"| ingest mimic_cxr | {counts['images']:,} image rows, {counts['studies']:,} reports (zip) | "
        f"{stats['seconds']:.1f} s | peak RSS {stats['peak_mib']:.0f} MiB (interpreter + imports {stats['baseline_mib']:.0f} MiB, "
        f"tables {stats['tables_mib']:.0f} MiB) | {platform.machine()}, {platform.python_implementation()} {platform.python_version()} |"
    )


if __name__ == "__main__":
    main()
