"""Shared parts of the benchmarks: machine description, timers, reports and data helpers."""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

PACKAGES: tuple[str, ...] = (
    "numpy",
    "pillow",
    "pyarrow",
    "datasets",
    "huggingface_hub",
    "pydicom",
    "nibabel",
    "scipy",
    "torch",
    "transformers",
)

# The tuning variables that change numpy's BLAS kernel or thread count; recorded with every run.
BLAS_VARIABLES: tuple[str, ...] = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


@dataclass
class Figure:
    """One benchmark figure, usually a ratio of two timings from the same run.

    Attributes:
        name: What is measured, e.g. ``"build time / floor time"``.
        value: The measured value.
        unit: ``"x"`` for ratios, else the unit (``"images/s"``, ``"s"``, ``"MiB"``).
        target: The target as text (``"<= 1.3"``), or None when the figure is informative only.
        met: Whether the value meets the target; None without a target.
        note: What the figure was computed from.
        text: Shown in place of the value when set, for yes/no figures.
    """

    name: str
    value: float
    unit: str
    target: str | None = None
    met: bool | None = None
    note: str = ""
    text: str | None = None

    def value_text(self) -> str:
        """Format the value with its unit: two decimals for ratios, three significant digits otherwise."""
        if self.text is not None:
            return self.text
        if self.unit == "x":
            return f"{self.value:.2f}x"
        if abs(self.value) >= 100:
            return f"{self.value:,.0f} {self.unit}"
        return f"{self.value:.3g} {self.unit}"


def at_most(name: str, value: float, limit: float, note: str = "") -> Figure:
    """Return a ratio figure whose target is ``value <= limit``."""
    return Figure(name, value, "x", f"<= {limit:g}", value <= limit, note)


def at_least(name: str, value: float, limit: float, note: str = "") -> Figure:
    """Return a ratio figure whose target is ``value >= limit``."""
    return Figure(name, value, "x", f">= {limit:g}", value >= limit, note)


def yes_no(name: str, value: bool, note: str = "") -> Figure:
    """Return a figure whose target is that ``value`` is true, shown as yes or no."""
    return Figure(name, float(value), "", "yes", value, note, text="yes" if value else "no")


@dataclass
class Report:
    """The result of one benchmark script.

    Attributes:
        title: The section title in docs/benchmarks.md.
        command: The command line that produced it.
        figures: The figures, targets first.
        details: Raw timings and counts behind the figures, one line each.
    """

    title: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """Render the report as a Markdown section with a figures table and a details list."""
        lines = [f"### {self.title}", "", f"Command: `{self.command}`", ""]
        lines += ["| figure | value | target | met | from |", "|---|---|---|---|---|"]
        for figure in self.figures:
            met = _met_text(figure.met, "yes", "**no**")
            lines.append(f"| {figure.name} | {figure.value_text()} | {figure.target or ''} | {met} | {figure.note} |")
        if self.details:
            lines += ["", "Raw measurements:", ""]
            lines += [f"- {line}" for line in self.details]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, object]:
        """Return the report as JSON-compatible data, read back by :meth:`from_json`."""
        return {
            "title": self.title,
            "command": self.command,
            "figures": [asdict(f) for f in self.figures],
            "details": self.details,
        }

    @classmethod
    def from_json(cls, data: dict) -> Report:
        """Rebuild a report written by :meth:`to_json`."""
        figures = [Figure(**figure) for figure in data["figures"]]
        return cls(data["title"], data["command"], figures, list(data["details"]))

    def text(self) -> str:
        """Render the report as plain text for the terminal."""
        lines = [f"== {self.title}", f"command: {self.command}"]
        for figure in self.figures:
            status = _met_text(figure.met, "  [target met]", "  [TARGET MISSED]")
            target = f"  (target {figure.target})" if figure.target else ""
            lines.append(f"  {figure.name}: {figure.value_text()}{target}{status}")
        lines += [f"    {line}" for line in self.details]
        return "\n".join(lines)


def _met_text(met: bool | None, met_text: str, missed_text: str) -> str:
    if met is None:
        return ""
    return met_text if met else missed_text


def command_line(module: str) -> str:
    """Return the command that started this process, as ``python -m MODULE ARGS``."""
    return " ".join(["python", "-m", module, *sys.argv[1:]])


def machine_info() -> dict[str, str]:
    """Describe the machine and the package versions that the timings depend on.

    Returns:
        Ordered ``{label: value}`` pairs: cores, CPU model, memory, Python,
        the BLAS numpy uses, the BLAS environment variables that are set, and
        the version of each package in ``PACKAGES``.
    """
    info = {
        "cores (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU model": _cpu_model(),
        "memory": f"{_mem_total_gib():.1f} GiB",
        "Python": platform.python_version(),
        "numpy BLAS": _numpy_blas(),
        "BLAS variables": ", ".join(f"{name}={os.environ[name]}" for name in BLAS_VARIABLES if name in os.environ)
        or "none set",
    }
    for package in PACKAGES:
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


def _numpy_blas() -> str:
    import numpy as np

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (TypeError, KeyError):
        return "unknown"
    return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages from ``/proc/loadavg``, or ``"unknown"``."""
    try:
        return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])
    except OSError:
        return "unknown"


def machine_text(info: dict[str, str]) -> str:
    """Render ``machine_info()`` as indented ``label: value`` lines."""
    return "\n".join(f"  {label}: {value}" for label, value in info.items())


class Timer:
    """Accumulates the wall time of the blocks run under :meth:`measure`, in seconds."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Time the enclosed block with ``time.perf_counter`` and add it to the total."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def synthetic_sources(work_dir: Path, subjects: int, seed: int = 0) -> Path:
    """Return a folder of synthetic sources for ``subjects`` subjects, generating it on first use.

    The folder ``work_dir/sources-<subjects>-seed<seed>`` is reused by later
    calls: ``generate_sources`` renames it into place only once it is complete.
    """
    from builder.synthetic import generate_sources

    folder = Path(work_dir) / f"sources-{subjects}-seed{seed}"
    if not folder.is_dir():
        start = time.perf_counter()
        generate_sources(folder, seed=seed, subjects=subjects, progress=False)
        logger.info("Generated synthetic sources in %s in %.1f s", folder, time.perf_counter() - start)
    return folder


def warm_up_build(data_dir: Path, out_dir: Path, sources: tuple[str, ...] | None = None) -> None:
    """Run a small build (two questions per triplet) so that a later timed build pays no first-call costs.

    The first build in a process imports the readers, their decoders
    (pydicom, nibabel, scipy.ndimage, PIL plugins) and parts of ``datasets``,
    which takes about a second. Timing it would slow the first build measured.
    """
    from builder.build import build_and_export
    from builder.mat import SOURCES, TRIPLETS

    caps = {triplet.slug: 2 for triplet in TRIPLETS}
    build_and_export(
        data_dir, out_dir, overwrite=True, sources=sources or SOURCES, allow_missing_sources=True, caps=caps
    )


def parquet_files(folder: Path) -> list[Path]:
    """Return the Parquet files under ``folder``, sorted by relative path."""
    return sorted(Path(folder).rglob("*.parquet"), key=lambda path: path.relative_to(folder).as_posix())


def parquet_content_digest(folder: Path) -> str:
    """Return a SHA-256 over the relative path, schema and rows of every Parquet file under ``folder``.

    Each table is serialized as one Arrow IPC stream after its chunks are
    combined, so the digest ignores how rows were split into row groups and
    compares values only.
    """
    digest = hashlib.sha256()
    for path in parquet_files(folder):
        table = pq.read_table(path).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()


def parquet_bytes_digest(folder: Path) -> str:
    """Return a SHA-256 over the relative path and raw bytes of every Parquet file under ``folder``."""
    digest = hashlib.sha256()
    for path in parquet_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def program_name() -> str | None:
    """Return ``python -m MODULE`` when the script runs as a module, so usage lines show the real command."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return f"python -m {spec.name}" if spec is not None else None


def base_parser(description: str) -> argparse.ArgumentParser:
    """Return an argument parser with the options every benchmark script shares (``--work``, ``--quiet``)."""
    parser = argparse.ArgumentParser(prog=program_name(), description=description)
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder for generated sources and builds, reused between runs; default: a temporary folder",
    )
    parser.add_argument("--quiet", action="store_true", help="hide progress bars and INFO logs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return parser


def configure_output(quiet: bool) -> None:
    """Set up logging for a benchmark run and switch off the ``datasets`` progress bars when ``quiet``."""
    if quiet:
        # tqdm reads TQDM_DISABLE when it is imported, so this must run before builder or datasets is.
        os.environ.setdefault("TQDM_DISABLE", "1")
    import datasets

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if quiet:
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()


def print_report(report: Report) -> None:
    """Print the machine description and the report to stdout."""
    print("machine:")
    print(machine_text(machine_info()))
    print(report.text())


def run_benchmark(
    parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Report], argv: list[str] | None = None
) -> int:
    """Parse the arguments, run one benchmark, print its report and write it to ``--json`` if given.

    Returns:
        The exit status, 0.
    """
    args = parser.parse_args(argv)
    configure_output(args.quiet)
    report = run(args)
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return 0


@contextmanager
def timed_attribute(owner: object, name: str, timer: Timer) -> Iterator[None]:
    """Replace ``owner.name`` by a wrapper that adds each call's wall time to ``timer``, then restore it.

    For a generator function the wrapper times each step of the generator,
    so the time its consumer spends between steps is left out.

    Args:
        owner: A module or class.
        name: The attribute, a function or a generator function.
        timer: Where the time goes.
    """
    original = getattr(owner, name)
    had_own = name in vars(owner)

    if inspect.isgeneratorfunction(original):

        def wrapper(*args: object, **kwargs: object) -> Iterator[object]:
            generator = original(*args, **kwargs)
            while True:
                with timer.measure():
                    try:
                        item = next(generator)
                    except StopIteration:
                        return
                yield item

    else:

        def wrapper(*args: object, **kwargs: object) -> object:
            with timer.measure():
                return original(*args, **kwargs)

    setattr(owner, name, functools.wraps(original)(wrapper))
    try:
        yield
    finally:
        if had_own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


@contextmanager
def work_folder(path: Path | None) -> Iterator[Path]:
    """Yield ``path`` (created if needed), or a temporary folder removed at the end when ``path`` is None."""
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="crossmed-bench-") as temporary:
        yield Path(temporary)
