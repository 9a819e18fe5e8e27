"""Command line: ``python crossmed.py build|demo|generate-sources|export-formats``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from builder.mat import SOURCES
from builder.pipeline import DEFAULT_CAPS
from builder.policy import POLICIES

logger = logging.getLogger("crossmed")


def _add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of templates, distractors, letters and boxes (default 0)")
    parser.add_argument("--num-proc", type=int, default=None, help="worker processes that decode images and write rows, then write the Parquet files (default 1)")
    parser.add_argument(
        "--on-bad-input", choices=POLICIES, default="error",
        help="what to do with a file that cannot be used: error stops the build (default), warn or skip leave it out",
    )
    parser.add_argument(
        "--max-side", type=int, default=1024,
        help="longest image side in pixels; larger images are shrunk (default 1024; 0 keeps source sizes)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def make_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``crossmed.py`` command line."""
    parser = argparse.ArgumentParser(prog="crossmed.py", description="Build the CrossMed benchmark.")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build every config from downloaded sources and export a Hub-layout folder")
    build.add_argument("--data-dir", type=Path, required=True, help="folder with one subfolder per source: " + ", ".join(SOURCES))
    build.add_argument("--out", type=Path, required=True, help="export folder to write")
    build.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES), help="sources to read (default all four)")
    build.add_argument(
        "--allow-missing-sources", action="store_true",
        help="build from the sources present instead of stopping when one is missing",
    )
    build.add_argument(
        "--cap", action="append", default=[], metavar="TRIPLET=N",
        help="maximum questions of one triplet, e.g. mri-brain-segmentation=500 (repeatable; defaults: "
        + ", ".join(f"{name}={value}" for name, value in DEFAULT_CAPS.items()) + ")",
    )
    build.add_argument("--no-caps", action="store_true", help="keep every question of every triplet")
    _add_build_options(build)

    sources = commands.add_parser("generate-sources", help="write synthetic sources in the four native layouts")
    sources.add_argument("--out", type=Path, required=True, help="folder to write the four source folders into")
    sources.add_argument("--subjects", type=int, default=40, help="subjects per source (default 40)")
    sources.add_argument("--seed", type=int, default=0, help="seed of the phantoms (default 0)")

    formats = commands.add_parser(
        "export-formats", help="write one config of an export folder for VLMEvalKit, lmms-eval or LLaVA fine-tuning",
    )
    formats.add_argument("--folder", type=Path, required=True, help="export folder written by `build`")
    formats.add_argument("--config", required=True, help="config to write, e.g. unrelated")
    formats.add_argument("--out", type=Path, required=True, help="folder to write the formats into")
    formats.add_argument(
        "--formats", nargs="+", default=None, metavar="FORMAT",
        help="vlmevalkit (test split TSV), lmms_eval (task folder), conversations (train split JSON Lines); default all",
    )
    formats.add_argument(
        "--dataset-path", default=None,
        help="Hub id or folder written into the lmms-eval task (default: the absolute path of --folder)",
    )
    formats.add_argument("--overwrite", action="store_true", help="replace existing outputs")

    demo = commands.add_parser(
        "demo", help="generate synthetic sources, build and export every config, load one back, evaluate baselines",
    )
    demo.add_argument("--out", type=Path, default=Path("demo"), help="folder for sources, export and runs (default ./demo)")
    demo.add_argument("--subjects", type=int, default=40, help="synthetic subjects per source (default 40)")
    demo.add_argument("--skip-eval", action="store_true", help="stop after the build and the count table")
    _add_build_options(demo)
    return parser


def parse_caps(entries: Sequence[str], no_caps: bool) -> dict[str, int] | None:
    """Merge ``TRIPLET=N`` entries over the default caps; None when ``no_caps`` is set.

    Raises:
        ValueError: naming an entry that is not ``TRIPLET=N`` with a known triplet and N >= 0.
    """
    from builder.mat import TRIPLETS, Triplet

    if no_caps:
        return None
    caps = dict(DEFAULT_CAPS)
    for entry in entries:
        name, _, value = entry.partition("=")
        if not value.isdigit():
            raise ValueError(f"Invalid --cap {entry!r}: expected TRIPLET=N with N a non-negative integer")
        try:
            triplet = Triplet.from_name(name.strip())
        except ValueError as error:
            slugs = ", ".join(triplet.slug for triplet in TRIPLETS)
            raise ValueError(f"Invalid --cap {entry!r}: {error} Slugs such as {slugs} work too.") from error
        caps[triplet.slug] = int(value)
    return caps


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status: 0 on success, 1 on an input error, 2 on a usage error."""
    parser = make_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("datasets").setLevel(logging.WARNING)

    try:
        return _run(args)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError) as error:
        # Input errors carry their own explanation (file, value, what to do); a traceback adds nothing.
        logger.error("%s", error)
        return 1


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject option values that would only fail later, after minutes of work."""
    max_side = getattr(args, "max_side", 0)
    if max_side and max_side < 16:
        parser.error(f"--max-side {max_side} is invalid: expected 0 (keep source sizes) or at least 16 pixels")
    num_proc = getattr(args, "num_proc", None)
    if num_proc is not None and num_proc < 1:
        parser.error(f"--num-proc {num_proc} is invalid: expected 1 or more processes")
    out = getattr(args, "out", None)
    if args.command == "build" and out is not None and out.exists() and not args.overwrite:
        parser.error(f"--out {out} already exists; pass --overwrite to replace it")


def _run(args: argparse.Namespace) -> int:
    if args.command == "generate-sources":
        from builder.synthetic import generate_sources

        roots = generate_sources(args.out, seed=args.seed, subjects=args.subjects)
        print("\n".join(f"{source}: {root}" for source, root in roots.items()))
        return 0
    if args.command == "build":
        return _run_build(args)
    if args.command == "export-formats":
        from builder.formats import FORMATS, export_formats

        written = export_formats(
            args.folder, args.config, args.out, tuple(args.formats or FORMATS),
            dataset_path=args.dataset_path, overwrite=args.overwrite,
        )
        print("\n".join(f"{name}: {path}" for name, path in written.items()))
        return 0
    from builder.demo import run_demo

    return run_demo(args)


def _run_build(args: argparse.Namespace) -> int:
    from builder.build import build_and_export, count_table, pool_summary

    result = build_and_export(
        args.data_dir,
        args.out,
        num_proc=args.num_proc,
        overwrite=args.overwrite,
        sources=tuple(args.sources),
        allow_missing_sources=args.allow_missing_sources,
        caps=parse_caps(args.cap, args.no_caps),
        seed=args.seed,
        on_bad_input=args.on_bad_input,
        max_side=args.max_side or None,
    )
    print(f"\nExported to {result.out_dir}\n\nQuestions per triplet and pool split:\n{pool_summary(result.pool_counts)}")
    print(f"\nQuestions per config, split and triplet:\n{count_table(result.pool_counts)}")
    skipped = result.skipped.summary_lines()
    print("\nSkipped inputs:\n" + ("\n".join(skipped) if skipped else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
