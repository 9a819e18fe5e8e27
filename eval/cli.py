"""Command line: ``python -m eval --model ... --dataset ... --out runs/NAME`` and ``python -m eval compare``.

Data-parallel runs use an existing launcher, for example
``torchrun --nproc_per_node 8 -m eval --model ... --out runs/NAME``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from eval.choices import BACKENDS, BASELINES, DTYPE_CHOICES, MODES
from eval.locations import DATASET_EXPECTED, MODEL_EXPECTED, check_folder_exists

logger = logging.getLogger(__name__)

EXIT_USAGE_ERROR = 2

DESCRIPTION = """\
Score a Hugging Face image-text-to-text model (or a weight-free baseline) on one
split of a built CrossMed config. The run folder receives predictions.jsonl,
results.json, report.md and plots. Rerunning the same command resumes an
interrupted run. `python -m eval compare RUN_DIR ...` prints a side-by-side table.
"""

EPILOG = """\
Data parallel: `torchrun --nproc_per_node N -m eval ...` (CPU or GPU) or
`accelerate launch --multi_gpu --num_processes N -m eval ...` (GPU). Each process
scores every N-th question and the first one merges the predictions.
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the evaluation command."""
    parser = argparse.ArgumentParser(prog="python -m eval", description=DESCRIPTION, epilog=EPILOG)
    _add_source_arguments(parser.add_argument_group("what to score"))
    _add_scoring_arguments(parser.add_argument_group("how to score"))
    _add_hardware_arguments(parser.add_argument_group("model loading and hardware"))
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="logging level (default: %(default)s)")
    return parser


def _add_source_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--model", help="Hub model id or local model folder (AutoModelForImageTextToText)")
    group.add_argument("--baseline", choices=BASELINES, help="score a baseline instead of a model: random "
                       "letters, or the train split's most frequent answer per triplet (prior)")
    group.add_argument("--dataset", required=True, help="built CrossMed folder (Hub layout) or Hub dataset id")
    group.add_argument("--config", help="config name, e.g. unrelated (default: the dataset's default config)")
    group.add_argument("--split", default="test", help="split to score (default: %(default)s)")
    group.add_argument("--limit", type=int, metavar="N", help="score only the first N questions of the split")
    group.add_argument("--cache-dir", help="datasets cache folder (default: the datasets library default)")
    group.add_argument("--out", required=True, type=Path, help="run folder for predictions and reports")


def _add_scoring_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--mode", choices=MODES, default="generate", help="generate: greedy text, then answer "
                       "extraction; likelihood: next-token log-probabilities of A-D (default: %(default)s)")
    group.add_argument("--blind", action="store_true", help="leave the image out of every prompt")
    group.add_argument("--circular", action="store_true", help="ask each question at all four rotations of "
                       "its options; correct only when all four answers are")
    group.add_argument("--max-new-tokens", type=int, default=16, metavar="N",
                       help="maximum generated tokens per question in generate mode (default: %(default)s)")
    group.add_argument("--seed", type=int, default=0,
                       help="seed of the random baseline and the bootstrap (default: %(default)s)")
    group.add_argument("--n-bootstrap", type=int, default=1000, metavar="N",
                       help="bootstrap resamples for the 95%% intervals (default: %(default)s)")


def _add_hardware_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--backend", choices=BACKENDS, default="hf", help="hf: transformers; vllm: vLLM, "
                       "generate mode only, needs `pip install vllm` (default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=8, metavar="N", help="questions per forward pass; "
                       "halved automatically on CUDA out of memory (default: %(default)s)")
    group.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="weight dtype; auto is "
                       "bfloat16 on CUDA and float32 on CPU (default: %(default)s)")
    group.add_argument("--device-map", help="device_map for from_pretrained, e.g. auto to spread one large "
                       "model over all visible GPUs (default: the whole model on one device)")
    group.add_argument("--num-workers", type=int, default=2, metavar="N", help="DataLoader worker processes that "
                       "decode images and run the processor (chat template, tokenizer, image processor) while the "
                       "model runs; 0 prepares batches in the main process, as transformers' dataloader_num_workers "
                       "does by default. On a CPU-only machine the workers share the cores with torch's threads "
                       "(default: %(default)s)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow the model repository's own Python code to run")
    group.add_argument("--allow-pickle-weights", action="store_true", help="allow .bin (pickle) weights when "
                       "the model has no safetensors files; pickle files can run code")


def build_compare_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``compare`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m eval compare",
        description="Print a Markdown table comparing finished runs side by side.",
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders, each with a results.json")
    parser.add_argument("--output", type=Path, help="also write the table to this Markdown file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["compare"]:
        return run_compare(build_compare_parser().parse_args(arguments[1:]))

    options = build_parser().parse_args(arguments)
    configure_logging(options.log_level)
    try:
        # Checked before eval.api imports torch and transformers, which takes seconds.
        check_local_folders(options)
    except FileNotFoundError as error:
        logger.error("%s", error)
        return EXIT_USAGE_ERROR
    from eval.api import evaluate

    try:
        evaluate(
            options.model,
            options.dataset,
            options.config,
            out=options.out,
            split=options.split,
            mode=options.mode,
            baseline=options.baseline,
            blind=options.blind,
            circular=options.circular,
            batch_size=options.batch_size,
            max_new_tokens=options.max_new_tokens,
            dtype=options.dtype,
            device_map=options.device_map,
            trust_remote_code=options.trust_remote_code,
            allow_pickle_weights=options.allow_pickle_weights,
            backend=options.backend,
            num_workers=options.num_workers,
            limit=options.limit,
            seed=options.seed,
            n_bootstrap=options.n_bootstrap,
            cache_dir=options.cache_dir,
        )
    except (ValueError, FileNotFoundError) as error:
        logger.debug("Traceback of the error below", exc_info=True)
        logger.error("%s", error)
        return EXIT_USAGE_ERROR
    return 0


def check_local_folders(options: argparse.Namespace) -> None:
    """Raise FileNotFoundError naming ``--model`` or ``--dataset`` when it is written as a path that does not exist."""
    if options.model is not None:
        check_folder_exists(options.model, kind="Model", expected=MODEL_EXPECTED)
    check_folder_exists(options.dataset, kind="Dataset", expected=DATASET_EXPECTED)


def run_compare(options: argparse.Namespace) -> int:
    """Print (and optionally write) the comparison table of the given runs."""
    from eval.compare import compare_runs

    table = compare_runs(options.run_dirs)
    print(table)
    if options.output is not None:
        options.output.write_text(table + "\n", encoding="utf-8")
    return 0


def configure_logging(level: str) -> None:
    """Send log records to stderr, prefixed with the process rank in a distributed run."""
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    logging.basicConfig(level=level, format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")
