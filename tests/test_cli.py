"""`mtcxr search` and `mtcxr label` through the command line: results, and one-line errors (exit 2,
no traceback) for every input fault a user reported."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from mtcxr.cli import main
from mtcxr.embedding_io import write_embeddings
from mtcxr.errors import InputError
from mtcxr.labels.extract import _read_reports, label_file
from mtcxr.models.heads import ProjectionHeads, save_heads
from mtcxr.retrieval.index import build_index
from mtcxr.retrieval.index_info import read_index_info
from mtcxr.retrieval.search import input_side, search_cli
from mtcxr.tables import CHEXPERT_LABELS

from tiny_tree import project_tree, write_tiny_demo_backbone, write_tiny_tree

MTCXR = Path(sys.executable).with_name("mtcxr")
INDEX = Path("index/demo/multitask")  # inside a results tree
DIM = 16


def one_line_error(capsys) -> str:
    """The stderr of the last command, checked to be one `mtcxr …: error:` line without a traceback."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
    assert captured.err.startswith("mtcxr ") and ": error: " in captured.err
    return captured.err


def random_heads(seed: int) -> ProjectionHeads:
    """Projection heads whose projectors are far from the identity, so their weights show in every score."""
    try:
        heads = ProjectionHeads(DIM, 8, seed=seed)
    except TypeError:  # heads.py from before `seed` became a required keyword
        heads = ProjectionHeads(DIM, 8)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for projector in (heads.image, heads.text):
            projector.down.weight.copy_(torch.from_numpy(rng.normal(size=tuple(projector.down.weight.shape))))
    return heads


def write_results_tree(results: Path, local_dir: str | None = None) -> None:
    """A tiny results tree (untrained demo backbone, tables, random embeddings, heads), then its index.

    With `local_dir` (a folder under `results`, named as the workflow names a fine-tuned backbone's:
    relative to the working directory) the backbone is that `local-dir:` folder instead of `demo`.
    """
    write_tiny_demo_backbone(Path(local_dir) if local_dir else results / "models/demo_backbone", DIM)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(16, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    reports = ["Small left pleural effusion.", "Lungs are clear.", "Moderate cardiomegaly.", "No pneumothorax."] * 2
    paths = write_tiny_tree(
        results,
        ["train"] * 4 + ["test"] * 4,
        reports,
        vectors[:8],
        vectors[8:],
        abnormal=[True, False] * 4,
        source="extracted",
    )
    if local_dir:  # the embeddings record the spec they were made with
        meta = {"spec": f"local-dir:{local_dir}", "normalized": True}
        write_embeddings(paths["image_embeddings"], "image_id", [f"i{i}" for i in range(8)], vectors[:8], meta)
        write_embeddings(paths["text_embeddings"], "study_id", [f"s{i}" for i in range(8)], vectors[8:], meta)
    heads = results / "models/demo/multitask"
    heads.mkdir(parents=True)
    save_heads(
        random_heads(1), heads / "head.safetensors", heads / "head.json", {"variant": "multitask", "trained": True}
    )
    projected = project_tree(
        paths,
        str(heads / "head.safetensors"),
        str(heads / "head.json"),
        results / "projected/demo/multitask",
        "multitask",
    )
    build_index(projected, str(results / INDEX), demo_dir=None if local_dir else str(results / "models/demo_backbone"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("built") / "results"
    write_results_tree(results)
    return results


@pytest.fixture()
def results(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built tree, free to break."""
    return Path(shutil.copytree(built, tmp_path / "results"))


@pytest.fixture()
def query_png(tmp_path: Path) -> Path:
    path = tmp_path / "query.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40), dtype=np.uint8), mode="L").save(path)
    return path


def search(capsys, index: Path, *query: str) -> list[str]:
    """Run `mtcxr search` and return its stdout lines (asserting exit 0)."""
    assert main(["search", "--index", str(index), *query]) == 0, capsys.readouterr().err
    return capsys.readouterr().out.splitlines()


# ---------------------------------------------------------------------------------------------
# mtcxr search


def test_input_side_takes_an_int_or_a_tuple() -> None:
    assert input_side(SimpleNamespace(image_size=96)) == 96  # open_clip ModifiedResNet (the demo backbone)
    assert input_side(SimpleNamespace(image_size=(224, 224))) == 224  # ViT
    assert input_side(SimpleNamespace(image_size=[160, 192])) == 192
    assert input_side(SimpleNamespace()) == 224


def test_search_by_image_with_the_demo_backbone(results: Path, query_png: Path, capsys) -> None:
    lines = search(capsys, results / INDEX, "--image", str(query_png), "-k", "3")
    assert len(lines) == 3
    ranks, scores = zip(*[(int(line.split("\t")[0]), float(line.split("\t")[1])) for line in lines])
    assert ranks == (1, 2, 3) and list(scores) == sorted(scores, reverse=True)
    assert all(line.split("\t")[2] in {"s4", "s5", "s6", "s7"} for line in lines)  # the test gallery's studies
    # k larger than the gallery gives the whole gallery (4 distinct reports).
    assert len(search(capsys, results / INDEX, "--image", str(query_png), "-k", "50")) == 4


def test_search_by_text(results: Path, capsys) -> None:
    lines = search(capsys, results / INDEX, "--text", "Small left pleural effusion.", "-k", "2")
    assert [line.split("\t")[0] for line in lines] == ["1", "2"]
    assert all(line.split("\t")[2] in {"i4", "i5", "i6", "i7"} for line in lines)


def test_index_json_paths_are_relative_to_the_index_folder(results: Path) -> None:
    info = json.loads((results / INDEX / "index.json").read_text())
    assert info["head_weights"] == "../../../models/demo/multitask/head.safetensors"
    assert info["head_config"] == "../../../models/demo/multitask/head.json"
    assert info["demo_dir"] == "../../../models/demo_backbone"
    resolved = read_index_info(results / INDEX)
    assert resolved["head_weights"] == str((results / "models/demo/multitask/head.safetensors").resolve())
    # An index written with absolute paths (before this change) still reads.
    info["head_weights"] = resolved["head_weights"]
    (results / INDEX / "index.json").write_text(json.dumps(info))
    assert read_index_info(results / INDEX)["head_weights"] == resolved["head_weights"]


def test_a_copied_results_tree_uses_its_own_heads(results: Path, tmp_path: Path, capsys) -> None:
    copy = Path(shutil.copytree(results, tmp_path / "elsewhere" / "results"))
    query = ("--text", "Moderate cardiomegaly.", "-k", "4")
    before = search(capsys, copy / INDEX, *query)
    # New heads in the original tree change the original's answers, and leave the copy's alone.
    heads = results / "models/demo/multitask"
    save_heads(random_heads(2), heads / "head.safetensors", heads / "head.json", {"variant": "multitask"})
    assert search(capsys, results / INDEX, *query) != before
    assert search(capsys, copy / INDEX, *query) == before
    shutil.rmtree(results)
    assert search(capsys, copy / INDEX, *query) == before


def test_an_index_on_a_local_dir_backbone_moves_with_its_results(tmp_path: Path, monkeypatch, capsys) -> None:
    """A fine-tuned backbone's spec is relative to the run's folder; its index finds it from anywhere."""
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)
    write_results_tree(Path("results"), local_dir="results/models/finetuned/demo_ft")
    info = json.loads((run / "results" / INDEX / "index.json").read_text())
    assert info["spec"] == "local-dir:results/models/finetuned/demo_ft"
    assert info["backbone_dir"] == "../../../models/finetuned/demo_ft" and info["demo_dir"] is None
    queries = [("--text", "Moderate cardiomegaly.", "-k", "4"), ("--image", str(query_png_at(tmp_path)), "-k", "3")]
    before = [search(capsys, Path("results") / INDEX, *query) for query in queries]
    assert len(before[0]) == 4 and len(before[1]) == 3
    moved = Path(shutil.move(str(run / "results"), tmp_path / "moved" / "results"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert [search(capsys, moved / INDEX, *query) for query in queries] == before
    # Its backbone folder gone too: the one-line error names both places looked in.
    shutil.rmtree(moved / "models/finetuned/demo_ft")
    assert main(["search", "--index", str(moved / INDEX), "--text", "x"]) == 2
    error = one_line_error(capsys)
    assert "models/finetuned/demo_ft (backbone_dir in" in error and "move or copy the whole results folder" in error


def test_a_local_dir_backbone_outside_the_results_stays_where_its_spec_says(tmp_path: Path, monkeypatch, capsys):
    """A user's own `local-dir:` model that did not move with the results is still found by its spec."""
    model = tmp_path / "models" / "mine"
    results = tmp_path / "results"
    write_results_tree(results, local_dir=str(model))
    query = ("--text", "Lungs are clear.", "-k", "2")
    before = search(capsys, results / INDEX, *query)
    moved = Path(shutil.move(str(results), tmp_path / "moved"))
    monkeypatch.chdir(tmp_path / "models")
    assert search(capsys, moved / INDEX, *query) == before


def query_png_at(folder: Path) -> Path:
    path = folder / "query.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40), dtype=np.uint8), mode="L").save(path)
    return path


def test_search_on_an_xtra_memory_folder_names_the_index_to_pass(results: Path, tmp_path: Path, capsys) -> None:
    memory = results / "xtra/demo/multitask/memory"
    memory.mkdir(parents=True)
    (memory / "memory.json").write_text(json.dumps({"backbone": "demo", "variant": "multitask", "spec": "demo"}))
    index = shutil.move(str(results / INDEX), tmp_path / "index")
    seeds = [results / "index/demo/multitask/seed0", results / "index/demo/multitask/seed1"]  # the workflow's layout
    for seed in seeds:
        shutil.copytree(index, seed)
    assert main(["search", "--index", str(memory), "--text", "x"]) == 2
    error = one_line_error(capsys)
    assert f"--index {memory} is X-TRA's memory of the train split (demo / multitask), not a retrieval index" in error
    assert error.rstrip().endswith(f"pass {seeds[0]} or {seeds[1]}") and "--forcerun" not in error
    # A folder above index folders lists them.
    assert main(["search", "--index", str(results / "index/demo"), "--text", "x"]) == 2
    error = one_line_error(capsys)
    assert "holds index folders but is not one itself" in error and str(seeds[0]) in error


def test_search_moved_index_without_its_heads_names_them(results: Path, tmp_path: Path, capsys) -> None:
    moved = Path(shutil.move(str(results / INDEX), tmp_path / "alone"))
    assert main(["search", "--index", str(moved), "--text", "x"]) == 2
    error = one_line_error(capsys)
    assert "head.safetensors (head_weights in" in error and "not found" in error and "move or copy the whole" in error


def test_search_corrupt_heads_names_them(results: Path, capsys) -> None:
    (results / "models/demo/multitask/head.safetensors").write_bytes(b"\x00" * 5)
    assert main(["search", "--index", str(results / INDEX), "--text", "x"]) == 2
    error = one_line_error(capsys)
    assert "head.safetensors" in error and "cannot be loaded" in error and "--forcerun train_head" in error


@pytest.mark.parametrize("name", ["texts.faiss", "images.faiss"])
def test_search_truncated_faiss_names_the_file_and_the_rerun(results: Path, query_png: Path, name: str, capsys) -> None:
    path = results / INDEX / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    query = ["--image", str(query_png)] if name == "texts.faiss" else ["--text", "Lungs are clear."]
    assert main(["search", "--index", str(results / INDEX), *query]) == 2
    error = one_line_error(capsys)
    assert f"{path} is truncated or corrupt" in error and "snakemake --cores all --forcerun build_index" in error


def test_search_garbage_faiss(results: Path, capsys) -> None:
    (results / INDEX / "images.faiss").write_bytes(b"\x00" * 7)
    assert main(["search", "--index", str(results / INDEX), "--text", "Lungs are clear."]) == 2
    assert "images.faiss is truncated or corrupt" in one_line_error(capsys)


@pytest.mark.parametrize("k", ["0", "-3", "two"])
def test_search_k_below_one_is_refused(results: Path, k: str, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["search", "--index", str(results / INDEX), "--text", "x", "-k", k])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "argument -k: k must be" in error and ">= 1" in error and "Traceback" not in error
    with pytest.raises(InputError, match="k must be >= 1"):
        search_cli(results / INDEX, None, "x", k=0)


def test_search_missing_index_folder(tmp_path: Path, capsys) -> None:
    assert main(["search", "--index", str(tmp_path / "nope"), "--text", "x"]) == 2
    error = one_line_error(capsys)
    assert f"--index {tmp_path / 'nope'}: no such folder" in error and "results/index/demo/multitask/seed0" in error


def test_search_folder_without_index_json(tmp_path: Path, capsys) -> None:
    assert main(["search", "--index", str(tmp_path), "--text", "x"]) == 2
    assert "index.json not found" in one_line_error(capsys)


@pytest.mark.parametrize("content", ["{", "[1, 2]", '{"spec": "demo"}'])
def test_search_unreadable_index_json(results: Path, content: str, capsys) -> None:
    (results / INDEX / "index.json").write_text(content)
    assert main(["search", "--index", str(results / INDEX), "--text", "x"]) == 2
    error = one_line_error(capsys)
    assert "index.json" in error and "--forcerun build_index" in error


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not an image at all", "not a readable image (unknown format)"),
        (None, "truncated or corrupt image"),
        (b"", "empty file (0 bytes)"),
    ],
)
def test_search_undecodable_image_names_file_and_reason(
    results: Path, query_png: Path, content, reason, capsys
) -> None:
    bad = query_png.with_name("bad.png")
    bad.write_bytes(query_png.read_bytes()[:60] if content is None else content)
    assert main(["search", "--index", str(results / INDEX), "--image", str(bad)]) == 2
    error = one_line_error(capsys)
    assert f"--image {bad}: {reason}" in error


def test_search_missing_image(results: Path, tmp_path: Path, capsys) -> None:
    assert main(["search", "--index", str(results / INDEX), "--image", str(tmp_path / "gone.png")]) == 2
    assert "gone.png: missing file" in one_line_error(capsys)


def test_search_errors_through_the_installed_command(results: Path, tmp_path: Path) -> None:
    (results / INDEX / "texts.faiss").write_bytes(b"FAISS?")
    image = tmp_path / "q.png"
    Image.new("L", (40, 40)).save(image)
    for args, fragment in [
        (["--index", str(tmp_path / "missing"), "--text", "x"], "no such folder"),
        (["--index", str(results / INDEX), "--image", str(image)], "texts.faiss is truncated or corrupt"),
        (["--index", str(results / INDEX), "--text", "x", "-k", "0"], "k must be >= 1"),
    ]:
        done = subprocess.run([str(MTCXR), "search", *args], capture_output=True, text=True)
        assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr, done.stderr


# ---------------------------------------------------------------------------------------------
# mtcxr label


def label(source: Path, output: Path, *extra: str) -> int:
    return main(
        ["label", str(source), "--id-column", "uid", "--text-column", "report", "-o", str(output), "-q", *extra]
    )


LATIN1 = b"uid,report\n1,No pneumothorax.\n2,Caf\xe9 au lait spots; small right pleural effusion.\n"


def test_label_zero_byte_csv(tmp_path: Path, capsys) -> None:
    (tmp_path / "r.csv").write_bytes(b"")
    assert label(tmp_path / "r.csv", tmp_path / "o.parquet") == 2
    error = one_line_error(capsys)
    assert "r.csv: empty file (0 bytes)" in error and "header" in error
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b'uid,report\n1,"No effusion.\n2,Clear.\n', "the quoted field starting on line 2 is never closed"),
        (b'uid,report\n1,ok\n2,"Small" effusion\n', "the record starting on line 3 is malformed"),
        (b'uid,report\n1,Small "left" effusion, no pneumothorax\n', "line 2 has 3 fields where the header has 2"),
    ],
)
def test_label_malformed_csv_names_the_line(tmp_path: Path, content: bytes, where: str, capsys) -> None:
    (tmp_path / "r.csv").write_bytes(content)
    assert label(tmp_path / "r.csv", tmp_path / "o.parquet") == 2
    error = one_line_error(capsys)
    assert f"r.csv: not a well-formed CSV: {where}" in error and "enclosed in double quotes" in error


def test_label_output_is_an_existing_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "r.csv").write_text("uid,report\n1,No effusion.\n")
    (tmp_path / "out").mkdir()
    assert label(tmp_path / "r.csv", tmp_path / "out") == 2
    error = one_line_error(capsys)
    assert f"-o {tmp_path / 'out'} is a folder" in error and "labels.parquet" in error


def test_label_output_below_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "r.csv").write_text("uid,report\n1,No effusion.\n")
    assert label(tmp_path / "r.csv", tmp_path / "r.csv" / "o.parquet") == 2
    assert "cannot be written" in one_line_error(capsys)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_label_missing_text_column(tmp_path: Path, suffix: str, capsys) -> None:
    frame = pl.DataFrame({"uid": ["1"], "findings": ["No effusion."]})
    source = tmp_path / f"r{suffix}"
    frame.write_csv(source) if suffix == ".csv" else frame.write_parquet(source)
    assert label(source, tmp_path / "o.parquet") == 2
    error = one_line_error(capsys)
    assert "no column 'report'" in error and "['uid', 'findings']" in error and "--text-column" in error


def test_label_latin1_fails_clearly_under_utf8(tmp_path: Path, capsys) -> None:
    (tmp_path / "r.csv").write_bytes(LATIN1)
    assert label(tmp_path / "r.csv", tmp_path / "o.parquet") == 2
    error = one_line_error(capsys)
    assert "r.csv: not valid utf-8: byte 0xe9 on line 3" in error
    assert "--encoding latin-1" in error and "iconv -f latin1 -t utf-8" in error
    assert not (tmp_path / "o.parquet").exists()


def test_label_latin1_with_encoding(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(LATIN1)
    assert label(tmp_path / "r.csv", tmp_path / "o.parquet", "--encoding", "latin-1") == 0
    labels = pl.read_parquet(tmp_path / "o.parquet")
    assert labels.select("uid", "pneumothorax", "pleural_effusion").rows() == [("1", 0, None), ("2", None, 1)]
    text = _read_reports(tmp_path / "r.csv", "uid", "report", "latin-1")["report"][1]
    assert text.startswith("Café au lait") and "\ufffd" not in text


def test_label_unknown_encoding(tmp_path: Path, capsys) -> None:
    (tmp_path / "r.csv").write_bytes(LATIN1)
    assert label(tmp_path / "r.csv", tmp_path / "o.parquet", "--encoding", "klingon") == 2
    assert "--encoding 'klingon' is not a known text encoding" in one_line_error(capsys)


def test_label_blank_texts_are_unmentioned_and_abnormal_null(tmp_path: Path, caplog) -> None:
    source = tmp_path / "r.parquet"
    pl.DataFrame(
        {
            "uid": ["a", "b", "c", "d", "e", "f"],
            "report": [None, "", "  \n ", "NaN", "Small left pleural effusion.", "Lungs are clear."],
        }
    ).write_parquet(source)
    with caplog.at_level(logging.WARNING, logger="mtcxr.labels.extract"):
        labels = label_file(source, "uid", "report", tmp_path / "o.parquet", progress=False)
    for row in labels.head(4).iter_rows(named=True):
        assert all(row[name] is None for name in CHEXPERT_LABELS) and row["abnormal"] is None
    assert labels["abnormal"].to_list() == [None, None, None, None, True, False]
    assert pl.read_parquet(tmp_path / "o.parquet")["abnormal"].null_count() == 4
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "4 report(s) with blank text: labels left unmentioned and abnormal null" in warnings[0]
    # A float column of NaN (pandas' missing text) is blank too.
    pl.DataFrame({"uid": ["a"], "report": [float("nan")]}).write_parquet(source)
    assert label_file(source, "uid", "report", tmp_path / "o.parquet", progress=False)["abnormal"].to_list() == [None]


def test_label_help_documents_blank_texts(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["label", "--help"])
    assert stopped.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "null, NaN or blank gets all 14 labels empty (not mentioned) and `abnormal` empty" in out
    assert "--encoding" in out


def test_label_duplicate_ids(tmp_path: Path, capsys) -> None:
    ids = ["1", "1", "2", "2", "2", "3", "4", "4", "5", "5", "6", "6", "7", "7", "8"]
    pl.DataFrame({"uid": ids, "report": ["No effusion."] * len(ids)}).write_csv(tmp_path / "r.csv")
    assert label(tmp_path / "r.csv", tmp_path / "o.parquet") == 2
    error = one_line_error(capsys)
    assert "6 id(s) in column 'uid' occur more than once: '1' (2 times), '2' (3 times), '4' (2 times)" in error
    assert "'6' (2 times) and 1 more" in error and "'7'" not in error
    assert "make the id column unique" in error


def test_label_errors_through_the_installed_command(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(LATIN1)
    (tmp_path / "empty.csv").write_bytes(b"")
    for source, fragment in [("r.csv", "not valid utf-8: byte 0xe9 on line 3"), ("empty.csv", "empty file (0 bytes)")]:
        done = subprocess.run(
            [
                str(MTCXR),
                "label",
                str(tmp_path / source),
                "--id-column",
                "uid",
                "--text-column",
                "report",
                "-o",
                str(tmp_path / "o.parquet"),
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_faiss_files_rank_as_the_evaluation_does(built):
    """`mtcxr search` answers from the index's FAISS files, `evaluate` from exact blocked matmuls
    (it needs every query's rank of its own report): both return the same top k."""
    import faiss

    from mtcxr.embedding_io import read_embeddings
    from mtcxr.metrics import topk_search

    folder = built / INDEX
    _, images, _ = read_embeddings(folder / "images.parquet", "image_id")
    _, texts, _ = read_embeddings(folder / "texts.parquet", "text_id")
    for queries, name, keys in ((images, "texts", texts), (texts, "images", images)):
        index = faiss.read_index(str(folder / f"{name}.faiss"))
        k = min(3, index.ntotal)
        faiss_scores, faiss_rows = index.search(np.ascontiguousarray(queries), k)
        scores, rows = topk_search(queries, keys, k)
        np.testing.assert_allclose(faiss_scores, scores, atol=1e-5)
        assert (faiss_rows == rows).all()
