"""mtcxr: chest X-ray image <-> report retrieval, multi-task heads and X-TRA, as a Snakemake workflow."""

__version__ = "0.1.0"
