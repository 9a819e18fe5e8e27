"""Build memory: peak RSS of a BraTS-only build of few cases against many, each in a fresh process.

The cases are BraTS 2020-like folders at the real volume size (240x240x155
voxels, uncompressed ``.nii`` as BraTS 2020 ships them). One synthetic
phantom is written once, and every case folder links to its files under its
own case id. The disk stores one case, but the reader opens each case
separately. A build keeps one case's volumes in memory at a time, so its
peak RSS must not grow with the number of cases.

Each build runs in a new Python process that reports its own peak resident
set size (``VmHWM`` in ``/proc/self/status``). A third process that only
imports the builder gives the baseline that a build adds to.

Run: ``python -m bench.memory [--few 5] [--many 20] [--shape 240 240 155]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import (
    Figure,
    Report,
    at_most,
    base_parser,
    command_line,
    configure_output,
    run_benchmark,
    work_folder,
)

BRATS_FOLDER = "MICCAI_BraTS2020_TrainingData"
SEQUENCES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
# Growth that still counts as flat: allocator and page-cache noise between two builds.
TARGET_GROWTH = 1.1


def write_template_case(folder: Path, shape: tuple[int, int, int], seed: int = 0) -> dict[str, Path]:
    """Write one BraTS 2020-like case (four int16 sequences, a uint8 segmentation) as ``.nii`` files.

    The affine is the 1 mm LPS affine of the real BraTS 2020 files.

    Returns:
        The file of each sequence and of ``"seg"``.
    """
    import nibabel as nib

    from builder.synthetic.phantoms import brain_mri

    phantom = brain_mri(np.random.default_rng(seed), shape, "HGG")
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1

    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    arrays = {**phantom.volumes, "seg": phantom.segmentation}
    for name, data in arrays.items():
        files[name] = folder / f"template_{name}.nii"
        nib.save(nib.Nifti1Image(data, affine), files[name])
    return files


def write_cases(data_dir: Path, template: dict[str, Path], count: int) -> None:
    """Create ``count`` case folders under ``data_dir/brats/MICCAI_BraTS2020_TrainingData`` from the template files.

    Files are hard links where the file system allows, else copies.
    """
    root = data_dir / "brats" / BRATS_FOLDER
    for number in range(1, count + 1):
        case_id = f"BraTS20_Training_{number:03d}"
        folder = root / case_id
        folder.mkdir(parents=True, exist_ok=True)
        for name, path in template.items():
            target = folder / f"{case_id}_{name}.nii"
            if target.exists():
                continue
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)


def peak_rss_kib() -> int:
    """Return this process's peak resident set size (``VmHWM``) in KiB."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("VmHWM not found in /proc/self/status; this benchmark needs Linux")


def child_main(data_dir: Path | None, out_dir: Path) -> None:
    """Run one build (or only the imports when ``data_dir`` is None) and print a JSON result line."""
    import crossmed  # noqa: F401  (imports datasets, the card and the planner, as a build does)
    from builder.build import build_and_export
    from builder.sources import reader_class

    reader_class("brats")
    result: dict[str, float] = {}
    if data_dir is not None:
        start = time.perf_counter()
        build = build_and_export(data_dir, out_dir, sources=("brats",), allow_missing_sources=True, overwrite=True)
        result["seconds"] = time.perf_counter() - start
        result["rows"] = sum(build.pool_counts.values())
    result["peak_rss_kib"] = peak_rss_kib()
    print("RESULT " + json.dumps(result))


def run_child(data_dir: Path | None, out_dir: Path) -> dict[str, float]:
    """Run :func:`child_main` in a new Python process and return its result."""
    command = [sys.executable, "-m", "bench.memory", "--child", "--out", str(out_dir), "--quiet"]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False, cwd=Path(__file__).parent.parent)
    if completed.returncode != 0:
        raise RuntimeError(f"Build process failed with exit code {completed.returncode}:\n{completed.stderr[-3000:]}")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"Build process printed no RESULT line; its output:\n{completed.stdout[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def run(args: argparse.Namespace) -> Report:
    """Write the cases, then measure the import baseline and the builds of few and many cases."""
    shape = tuple(args.shape)
    report = Report(f"Build memory (BraTS only, {'x'.join(map(str, shape))} voxels)", command_line("bench.memory"))
    with work_folder(args.work) as work:
        folder = work / f"memory-{'x'.join(map(str, shape))}"
        template = write_template_case(folder / "template", shape)
        few, many = folder / f"cases-{args.few}", folder / f"cases-{args.many}"
        write_cases(few, template, args.few)
        write_cases(many, template, args.many)

        baseline = run_child(None, folder / "out-baseline")
        small = run_child(few, folder / "out-few")
        large = run_child(many, folder / "out-many")

    mib = {
        name: result["peak_rss_kib"] / 1024 for name, result in (("base", baseline), ("few", small), ("many", large))
    }
    report.figures.append(
        at_most(
            f"peak RSS {args.many} cases / {args.few} cases",
            mib["many"] / mib["few"],
            TARGET_GROWTH,
            note=f"{mib['many']:.0f} MiB against {mib['few']:.0f} MiB",
        )
    )
    report.figures.append(
        Figure(
            f"peak RSS above the import baseline, {args.many} / {args.few} cases",
            (mib["many"] - mib["base"]) / (mib["few"] - mib["base"]),
            "x",
            note=f"{mib['many'] - mib['base']:.0f} MiB against {mib['few'] - mib['base']:.0f} MiB",
        )
    )
    volume_mib = np.prod(shape) * 8 / 1024**2
    report.figures.append(
        Figure(
            "build's peak above baseline / one float64 volume",
            (mib["many"] - mib["base"]) / volume_mib,
            "x",
            note=f"one float64 volume is {volume_mib:.0f} MiB",
        )
    )
    report.details.append(f"import baseline: {mib['base']:.0f} MiB")
    for label, result, count in (("few", small, args.few), ("many", large, args.many)):
        report.details.append(
            f"{count} cases: {result['rows']:.0f} rows in {result['seconds']:.1f} s, peak RSS {mib[label]:.0f} MiB"
        )
    return report


def parser() -> argparse.ArgumentParser:
    """Return the command-line parser of this benchmark."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--few", type=int, default=5, help="cases of the small build (default 5)")
    parser.add_argument("--many", type=int, default=20, help="cases of the large build (default 20)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(240, 240, 155), help="volume size in voxels (default 240 240 155)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the machine, the command and the figures."""
    args = parser().parse_args(argv)
    if args.child:
        configure_output(quiet=True)
        child_main(args.data_dir, args.out)
        return 0
    return run_benchmark(parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
