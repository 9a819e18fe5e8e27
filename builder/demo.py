"""The main job on the embedded default: synthetic sources, every config, a load back, an evaluation.

``python crossmed.py demo`` needs no download and no network. It writes
everything under one folder (``./demo`` by default):

- ``sources/``: synthetic CheXpert, SIIM-ACR, BraTS 2020 and MosMedData in their native layouts;
- ``crossmed/``: the exported Hub-layout folder with every config;
- ``runs/``: evaluations of the weight-free baselines and of a tiny randomly initialized model.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import datasets

from builder.build import build_and_export, count_table, pool_summary

logger = logging.getLogger(__name__)

DEMO_CONFIG = "unrelated"


def run_demo(args: argparse.Namespace) -> int:
    """Run every step of the demo and print what each produced; returns the exit status."""
    # Loading a local folder needs no network, but datasets pings a download counter unless told not to.
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    out = Path(args.out)
    sources = out / "sources"
    export = out / "crossmed"

    _generate_sources(sources, args.seed, args.subjects)
    result = build_and_export(
        sources,
        export,
        num_proc=args.num_proc,
        overwrite=True,
        seed=args.seed,
        on_bad_input=args.on_bad_input,
        max_side=args.max_side or None,
    )
    print(f"\nExported every config to {export}\n\nQuestions per triplet and pool split:\n{pool_summary(result.pool_counts)}")
    print(f"\nQuestions per config, split and triplet:\n{count_table(result.pool_counts)}")

    _load_back(export)
    if not args.skip_eval:
        _evaluate(export, out / "runs")
    return 0


def _generate_sources(sources: Path, seed: int, subjects: int) -> None:
    from builder.synthetic import generate_sources

    if sources.is_dir():
        logger.info("Reusing synthetic sources in %s", sources)
        return
    generate_sources(sources, seed=seed, subjects=subjects)


def _load_back(export: Path) -> None:
    """Load one config from the export folder, in memory and streaming, and print what came back."""
    loaded = datasets.load_dataset(str(export), DEMO_CONFIG)
    print(f"\nload_dataset({str(export)!r}, {DEMO_CONFIG!r}):")
    for split, dataset in loaded.items():
        print(f"  {split}: {dataset.num_rows} rows")

    first = next(iter(datasets.load_dataset(str(export), DEMO_CONFIG, split="test", streaming=True)))
    triplet = loaded["test"].features["triplet"].int2str(first["triplet"])
    print(f"  streaming, first test row: id={first['id']} triplet={triplet} answer={first['answer']}")
    print(f"  question: {first['question']}")
    print(f"  options: {first['options']}")


def _evaluate(export: Path, runs: Path) -> None:
    """Score the baselines and a tiny random-weight model on the demo config's test split."""
    from eval.api import evaluate
    from eval.compare import compare_runs
    from eval.tiny import build_tiny_model

    common = {"dataset": str(export), "config": DEMO_CONFIG, "split": "test"}
    run_dirs = []
    for baseline in ("random", "prior"):
        run_dirs.append(runs / baseline)
        evaluate(None, baseline=baseline, out=run_dirs[-1], **common)

    model_dir = build_tiny_model("qwen2_vl", runs / "tiny-qwen2-vl-model")
    print(
        f"\nEvaluating a tiny Qwen2-VL built offline with RANDOM weights ({model_dir}). Expect chance-level "
        "accuracy in likelihood mode; in generate mode the random model writes text that names no option, "
        "so nearly every answer is invalid and accuracy falls below chance."
    )
    for mode in ("likelihood", "generate"):
        run_dirs.append(runs / f"tiny-qwen2-vl-{mode}")
        evaluate(str(model_dir), mode=mode, out=run_dirs[-1], batch_size=8, **common)

    print("\n" + compare_runs(run_dirs))
    print(f"\nReports: {', '.join(str(path / 'report.md') for path in run_dirs)}")
