"""Zero-copy embedding reads are read-only NumPy arrays: no stage hands one to torch.from_numpy (which warns,
"The given NumPy array is not writable", and would let torch write into Arrow's buffer).

torch warns once per process, so each path runs in a fresh interpreter with UserWarning made an error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# A tiny tree, an X-TRA memory read back as neighbour tokens (train_xtra, evaluate_xtra, generate_xtra_reports),
# heads with a BCE loss (evaluate's classifier path), their index and its evaluation (metrics' rankings over the
# index's read-only vectors).
SCRIPT = """
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.simplefilter("error")  # every warning, torch's UserWarning included, is an exception
root = Path(sys.argv[1])

from mtcxr.embedding_io import read_embeddings, write_embeddings
from mtcxr.retrieval.evaluate import EvaluateSettings, evaluate_retrieval
from mtcxr.models.heads import ProjectionHeads, save_heads
from mtcxr.retrieval.index import build_index
from mtcxr.tables import read_table, write_table
from mtcxr.xtra.model import load_memory_tokens
from tiny_tree import project_tree, write_tiny_tree

vectors = np.eye(8, dtype=np.float32)
paths = write_tiny_tree(root, ["test"] * 6 + ["train"] * 2, [f"Report {i}." for i in range(8)], vectors, vectors)

# X-TRA's memory read back as neighbour tokens (first: torch warns once per process).
memory = root / "memory"
ids = [f"s{i}" for i in range(8)]
write_embeddings(memory / "images.parquet", "image_id", [f"i{i}" for i in range(8)], vectors, {}, {"study_id": ids})
write_embeddings(memory / "reports.parquet", "study_id", ids, vectors, {})
write_table(read_table(paths["labels"], "labels"), "labels", memory / "labels.parquet")
tokens = load_memory_tokens(memory, torch.device("cpu"))
rows = torch.tensor([[0, 1], [2, 3]])
print(tokens(rows, rows)[0].shape)

save_heads(
    ProjectionHeads(8, 4, seed=0), root / "head.safetensors", root / "head.json",
    {"variant": "multitask", "trained": True, "losses": {"clip": 1.0, "bce": 1.0}},
)
projected = project_tree(paths, str(root / "head.safetensors"), str(root / "head.json"), root / "projected", "multitask")
build_index(projected, str(root / "index"))
_, images, _ = read_embeddings(root / "index" / "images.parquet", "image_id")
assert not images.flags.writeable  # the path under test: a zero-copy read
metrics = evaluate_retrieval(
    str(root / "index"), paths["labels"], str(root / "m.parquet"), str(root / "q.parquet"), None,
    EvaluateSettings(ks=(1,), precision_k=1, n_boot=10, protocols=("mtcxr",)),
)
print("classifier_auc" in set(metrics["metric"]))

"""


def test_no_read_only_array_reaches_torch(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=TESTS,
        env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["torch.Size([2, 4, 8])", "True"]
