"""Every file ingest reads is an `input:`: changing one makes Snakemake rerun ingest and what follows."""

from __future__ import annotations

import gzip
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import write_image, write_iu_tree, write_manifest_tree, write_mimic_tree
from tiny_workflow import snakemake as run_command

from mtcxr.data.ingest import ingest_inputs

REPO = Path(__file__).resolve().parents[2]


def config_for(tmp_path: Path, dataset: dict) -> Path:
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config.update(dataset=dataset, results=str(tmp_path / "results"))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(config: Path, *args: str) -> subprocess.CompletedProcess:
    return run_command("--cores", "1", *args, "--configfile", str(config))


def planned(config: Path, target: str) -> set[str]:
    """The rules a dry run would run for `target`."""
    done = snakemake(config, "-n", target)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    if not any(line.startswith("job ") for line in lines):
        return set()
    start = next(i for i, line in enumerate(lines) if line.startswith("job ")) + 2
    rules = set()
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        rules.add(parts[0])
    return rules


def rows_reversed(path: Path) -> None:
    """Rewrite a CSV (gzipped or not) with its data rows in reverse order: new bytes, same table."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        header, *rows = handle.read().splitlines(keepends=True)
    with opener(path, "wb") as handle:
        handle.write(header + b"".join(reversed(rows)))


def run_ingest(config: Path) -> str:
    """Run ingest and preprocessing; return the pixel-shard target, which now has nothing to do."""
    results = yaml.safe_load(config.read_text())["results"]
    target = f"{results}/data/pixels/shard-0.parquet"
    done = snakemake(config, target)
    assert done.returncode == 0, done.stderr[-3000:]
    assert planned(config, target) == set()
    return target


@pytest.mark.slow
def test_manifest_row_image_and_added_file_rerun_ingest(tmp_path: Path):
    manifest = write_manifest_tree(tmp_path / "collection")
    config = config_for(tmp_path, {"kind": "manifest", "manifest": str(manifest), "views": ["PA", "AP", "UNKNOWN"]})
    target = run_ingest(config)

    # Each change alone, its file's bytes put back before the next (newer but equal: nothing to do again).
    original = manifest.read_bytes()
    manifest.write_text(manifest.read_text().replace("Lungs clear.", "Lungs are clear."))
    assert planned(config, target) == {"ingest", "preprocess_images"}
    manifest.write_bytes(original)
    assert planned(config, target) == set()

    image = manifest.parent / "images/a.png"
    original = image.read_bytes()
    write_image(image, (44, 50), "L")  # replaced in place: same name, new pixels
    assert planned(config, target) == {"ingest", "preprocess_images"}
    image.write_bytes(original)
    assert planned(config, target) == set()

    write_image(manifest.parent / "images/f.png", (30, 30), "L")  # listed in the manifest, missing until now
    assert planned(config, target) == {"ingest", "preprocess_images"}


@pytest.mark.slow
def test_mimic_csv_and_reports_zip_rerun_ingest(tmp_path: Path):
    root = write_mimic_tree(tmp_path / "mimic", images=True)
    config = config_for(tmp_path, {"kind": "mimic_cxr", "root": str(root)})
    target = run_ingest(config)
    # Snakemake skips an input whose content is unchanged (its checksum): each file is edited, not touched,
    # and once its bytes are back, newer but equal, the dry run has nothing to do again.
    for name in ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-chexpert.csv.gz"):
        original = (root / name).read_bytes()
        rows_reversed(root / name)
        assert planned(config, target) == {"ingest", "preprocess_images"}, name
        (root / name).write_bytes(original)
        assert planned(config, target) == set(), name
    reports = root / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(reports) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(reports, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text.replace(b"effusion", b"pleural effusion"))
    assert planned(config, target) == {"ingest", "preprocess_images"}


def test_ingest_inputs_list_what_each_reader_reads(tmp_path: Path):
    manifest = write_manifest_tree(tmp_path / "collection")
    listed = ingest_inputs(
        {"kind": "manifest", "manifest": str(manifest), "views": ["PA", "AP", "UNKNOWN"]}, "both", 0, "reject"
    )
    images = manifest.parent / "images"
    # the manifest, every kept image that exists, and the folder of the one that does not (f.png)
    assert listed == [str(manifest), *(str(images / f"{n}") for n in ("a.png", "c.png", "e.png", "i.png")), str(images)]

    iu = write_iu_tree(tmp_path / "iu")
    listed = ingest_inputs({"kind": "iu_xray", "root": str(iu)}, "both", 0, "reject")
    assert listed[:2] == [str(iu / "indiana_reports.csv"), str(iu / "indiana_projections.csv")]
    assert all(Path(path).exists() for path in listed) and len(listed) > 2

    mimic = write_mimic_tree(tmp_path / "mimic")
    assert ingest_inputs({"kind": "mimic_cxr", "root": str(mimic)}, "both", 0, "reject") == [
        str(mimic / name)
        for name in (
            "mimic-cxr-2.0.0-metadata.csv.gz",
            "mimic-cxr-2.0.0-split.csv",
            "mimic-cxr-2.0.0-chexpert.csv.gz",
            "mimic-cxr-reports.zip",
        )
    ]
    assert ingest_inputs({"kind": "synthetic"}, "both", 0, "reject") == []


def test_fail_policy_stops_at_the_first_reject_before_any_job(tmp_path: Path):
    from mtcxr.data.ingest import BadItemsError

    manifest = write_manifest_tree(tmp_path / "collection")
    with pytest.raises(BadItemsError, match=r"item\(s\) rejected at ingest, first: "):
        ingest_inputs({"kind": "manifest", "manifest": str(manifest)}, "both", 0, "fail")
