"""The `mtcxr` command: `mtcxr label` and `mtcxr search`."""

from __future__ import annotations

import argparse
import sys

from mtcxr.errors import InputError


def _label(args: argparse.Namespace) -> None:
    from mtcxr.labels.extract import label_file

    label_file(
        input_path=args.input,
        id_column=args.id_column,
        text_column=args.text_column,
        output_path=args.output,
        progress=not args.quiet,
        encoding=args.encoding,
    )


def _search(args: argparse.Namespace) -> None:
    from mtcxr.retrieval.search import search_cli

    search_cli(index_dir=args.index, image=args.image, text=args.text, k=args.k)


def _positive_int(value: str) -> int:
    """argparse type for -k: an integer >= 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"k must be an integer >= 1, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"k must be >= 1, got {number}")
    return number


LABEL_HELP = """Label reports with the 14 CheXpert observations (1 positive, 0 negative, -1 uncertain, empty
not mentioned) and `abnormal`. A report whose text is null, NaN or blank gets all 14 labels empty
(not mentioned) and `abnormal` empty, and the run logs one warning counting them. Ids must be
unique. CSV input is decoded as --encoding (UTF-8 by default)."""


def build_parser() -> argparse.ArgumentParser:
    """The `mtcxr` argument parser with its `label` and `search` subcommands."""
    parser = argparse.ArgumentParser(prog="mtcxr", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    label = commands.add_parser("label", help="label reports with the 14 CheXpert observations", description=LABEL_HELP)
    label.add_argument("input", help="CSV or Parquet file of reports")
    label.add_argument("--id-column", required=True, help="column holding the report/study id")
    label.add_argument("--text-column", required=True, help="column holding the report text")
    label.add_argument("-o", "--output", required=True, help="output Parquet file")
    label.add_argument(
        "--encoding",
        default="utf-8",
        help="text encoding of a CSV input (default utf-8; e.g. latin-1 or cp1252 for Windows exports)",
    )
    label.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    label.set_defaults(run=_label)

    search = commands.add_parser("search", help="query a built retrieval index")
    search.add_argument("--index", required=True, help="results/index/<backbone>/<variant>/seed<N>")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="query image (returns reports)")
    query.add_argument("--text", help="query report text (returns images)")
    search.add_argument("-k", type=_positive_int, default=5, help="number of results (>= 1)")
    search.set_defaults(run=_search)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `mtcxr` command; return 0, or 2 after printing a one-line error the user can act on."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (InputError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"mtcxr {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
