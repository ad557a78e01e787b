"""The `mtcxr` command: `mtcxr label` and `mtcxr search`."""

from __future__ import annotations

import argparse
import sys


class UserError(Exception):
    """An error the user can fix; printed as one line without a traceback."""


def _label(args: argparse.Namespace) -> None:
    from mtcxr.labels import label_file

    label_file(
        input_path=args.input,
        id_column=args.id_column,
        text_column=args.text_column,
        output_path=args.output,
        progress=not args.quiet,
    )


def _search(args: argparse.Namespace) -> None:
    from mtcxr.index import search_cli

    search_cli(index_dir=args.index, image=args.image, text=args.text, k=args.k)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtcxr", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    label = commands.add_parser("label", help="label reports with the 14 CheXpert observations")
    label.add_argument("input", help="CSV or Parquet file of reports")
    label.add_argument("--id-column", required=True, help="column holding the report/study id")
    label.add_argument("--text-column", required=True, help="column holding the report text")
    label.add_argument("-o", "--output", required=True, help="output Parquet file")
    label.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    label.set_defaults(run=_label)

    search = commands.add_parser("search", help="query a built retrieval index")
    search.add_argument("--index", required=True, help="results/index/<backbone>/<variant>")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="query image (returns reports)")
    query.add_argument("--text", help="query report text (returns images)")
    search.add_argument("-k", type=int, default=5, help="number of results")
    search.set_defaults(run=_search)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (UserError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"mtcxr {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
