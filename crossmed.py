"""CrossMed: a benchmark of compositional generalization for medical vision-language models.

This module holds the ``datasets`` builder. Current ``datasets`` releases no
longer run dataset scripts through ``load_dataset``, so use the class directly::

    from crossmed import CrossMed

    builder = CrossMed(config_name="unrelated", data_dir="SOURCES")
    builder.download_and_prepare()
    dataset = builder.as_dataset()

or export a Hub-layout folder once and load it with ``load_dataset(folder, "unrelated")``
(``python crossmed.py build --data-dir SOURCES --out crossmed``). Decoding,
question generation and protocols live in the ``builder`` package.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets.exceptions import DatasetGenerationError

from builder.card import CITATION, DESCRIPTION, HOMEPAGE, LICENSE
from builder.features import crossmed_features
from builder.generation import GenerationSettings, generate_rows
from builder.mat import SOURCES, check_choice
from builder.pipeline import DEFAULT_CAPS, PlanSettings, build_plan, interleave_sources, select_jobs
from builder.planner import CaseJob
from builder.policy import POLICIES, BadInputError, BadInputLog, read_worker_failure, save_worker_failure
from builder.protocols import all_protocols, get_protocol
from builder.splits import POOL_SPLITS

logger = logging.getLogger(__name__)

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
CrossMed is built from four sources that you download yourself under their own terms.
Put them in one folder, one subfolder per source, as each source ships:

  SOURCES/chexpert/CheXpert-v1.0-small/{train.csv,valid.csv,train/,valid/}   (or CheXpert-v1.0/)
  SOURCES/siim/{train-rle.csv,dicom-images-train/}
  SOURCES/brats/MICCAI_BraTS2020_TrainingData/BraTS20_Training_NNN/...
  SOURCES/mosmed/{studies/CT-0 ... CT-4/,masks/,dataset_registry.xlsx}

then pass data_dir="SOURCES" (--data-dir SOURCES on the command line). The README
section 'Getting the sources' gives the download page of each source.
"""


@dataclass
class CrossMedConfig(datasets.BuilderConfig):
    """One protocol config of CrossMed.

    Args:
        protocol: The protocol config name, e.g. ``"unrelated"``; defaults to ``name``.
        seed: Seeds templates, distractors, answer letters, boxes and caps. Default 0.
        sources: Sources to read, a subset of ``chexpert``, ``siim``, ``brats``, ``mosmed``.
        allow_missing_sources: Build from the sources present instead of raising. Default False.
        on_bad_input: ``"error"`` (default), ``"warn"`` or ``"skip"`` for files that cannot be used.
        max_side: Longest image side in pixels; larger images shrink. None keeps source sizes. Default 1024.
        caps: Maximum questions per triplet slug. Defaults to the published sizes.
        reader_options: Per source, keyword options of its reader, e.g.
            ``{"brats": {"slices_per_volume": 3}, "chexpert": {"uncertain": "ignore"}}``.
    """

    protocol: str | None = None
    seed: int = 0
    sources: tuple[str, ...] = SOURCES
    allow_missing_sources: bool = False
    on_bad_input: str = "error"
    max_side: int | None = 1024
    caps: dict[str, int] | None = field(default_factory=lambda: dict(DEFAULT_CAPS))
    reader_options: dict[str, dict[str, object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Check every field, raising a ValueError that names the field and the valid values.

        ``datasets`` sets keyword overrides on a copy of a predefined config
        without calling ``__post_init__`` again, so the builder calls this too.
        """
        self.protocol = self.protocol or self.name
        get_protocol(self.protocol)
        for source in self.sources:
            check_choice("source", source, SOURCES)
        if self.on_bad_input not in POLICIES:
            raise ValueError(f"Invalid on_bad_input {self.on_bad_input!r}: expected one of {', '.join(POLICIES)}.")
        if self.max_side is not None and self.max_side < 16:
            raise ValueError(f"Invalid max_side {self.max_side!r}: expected None or at least 16 pixels.")


class CrossMed(datasets.GeneratorBasedBuilder):
    """CrossMed four-option VQA with Modality-Anatomy-Task triplets; one config per protocol."""

    BUILDER_CONFIG_CLASS = CrossMedConfig
    BUILDER_CONFIGS = [
        CrossMedConfig(name=protocol.name, description=protocol.description) for protocol in all_protocols()
    ]
    DEFAULT_CONFIG_NAME = "unrelated"
    VERSION = datasets.Version("1.0.0")

    @property
    def manual_download_instructions(self) -> str:
        return MANUAL_DOWNLOAD_INSTRUCTIONS

    def download_and_prepare(self, *args: Any, **kwargs: Any) -> None:
        """Build the splits. With ``num_proc=N``, N processes each decode and write one block of cases.

        NOTE: under the spawn or forkserver start method (macOS, Windows, Linux
        from Python 3.14), the worker processes of each split import the
        builder's modules again. A build of 30 synthetic subjects per source
        with ``num_proc=2`` took 7.0 s there against 3.7 s with fork (one
        2-core machine, same output).

        Raises:
            BadInputError: (as the cause of DatasetGenerationError) for unusable
                input under ``on_bad_input="error"``, also when a worker process met it.
        """
        try:
            super().download_and_prepare(*args, **kwargs)
        except DatasetGenerationError as error:
            failure = read_worker_failure(self.skip_log_dir) if getattr(self, "skip_log_dir", None) else None
            if failure is None or isinstance(error.__cause__, BadInputError):
                raise
            # The pool sends a worker's error back without its cause, so the
            # BadInputError that the worker saved is attached again here.
            raise DatasetGenerationError(f"An error occurred while generating the dataset: {failure}") from failure

    def __getstate__(self) -> dict[str, Any]:
        # With num_proc, datasets sends a copy of the builder to each worker process. Its copy of
        # the TemporaryDirectory could delete the skip logs when the worker cleans it up.
        state = dict(super().__getstate__())
        state.pop("_skip_log_folder", None)
        return state

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=DESCRIPTION,
            features=crossmed_features(),
            homepage=HOMEPAGE,
            citation=CITATION,
            license=LICENSE,
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        self.config.validate()
        data_dir = self._checked_data_dir(dl_manager)
        settings = self.config
        self.bad_inputs = BadInputLog(settings.on_bad_input)
        self._skip_log_folder = tempfile.TemporaryDirectory(prefix="crossmed-skipped-")
        self.skip_log_dir = self._skip_log_folder.name

        plan_settings = PlanSettings(
            data_dir=data_dir,
            sources=tuple(settings.sources),
            allow_missing_sources=settings.allow_missing_sources,
            seed=settings.seed,
            caps=settings.caps,
            on_bad_input=settings.on_bad_input,
            reader_options=settings.reader_options,
        )
        roots, jobs = build_plan(plan_settings, self.bad_inputs)
        generation = GenerationSettings(
            source_roots={source: str(root) for source, root in roots.items()},
            seed=settings.seed,
            on_bad_input=settings.on_bad_input,
            max_side=settings.max_side,
            reader_options={source: dict(options) for source, options in settings.reader_options.items()},
            skip_log_dir=self.skip_log_dir,
        )

        protocol = get_protocol(settings.protocol)
        return [
            datasets.SplitGenerator(
                name=split,
                gen_kwargs={
                    "jobs": interleave_sources(select_jobs(jobs, split, protocol.split_triplets(split))),
                    "settings": generation,
                },
            )
            for split in POOL_SPLITS
        ]

    def _checked_data_dir(self, dl_manager: datasets.DownloadManager) -> Path:
        """Return ``data_dir``, raising with the config name, the folder and the instructions if it is unusable.

        ``datasets`` stopped checking ``manual_download_instructions`` itself in 4.4.2.
        """
        data_dir = self.config.data_dir or dl_manager.manual_dir
        if data_dir is None:
            raise FileNotFoundError(
                f"CrossMed config {self.config.name!r} needs data_dir pointing at the downloaded sources.\n"
                f"{MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"CrossMed config {self.config.name!r}: data_dir {folder} is not a folder.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        return folder

    def _generate_examples(self, jobs: list[CaseJob], settings: GenerationSettings):
        """Yield ``(id, row)`` pairs, raising on a repeated id (``datasets`` no longer checks keys since 4.4.2).

        With ``num_proc``, each process gets one block of ``jobs`` and checks
        ids within it. Ids are unique across blocks too, because ``plan_questions``
        raises on a repeated question id before any block is made.
        """
        seen: set[str] = set()
        try:
            for key, row in generate_rows(jobs, settings):
                if key in seen:
                    raise ValueError(f"Duplicate example id {key!r} in config {self.config.name!r}")
                seen.add(key)
                yield key, row
        except BadInputError as error:
            if settings.skip_log_dir:
                save_worker_failure(settings.skip_log_dir, error)
            raise

    def skipped_inputs(self) -> BadInputLog:
        """Return every input skipped by the last ``download_and_prepare``, from all worker processes."""
        log = BadInputLog(self.config.on_bad_input)
        log.extend(getattr(self, "bad_inputs", BadInputLog("skip")))
        folder = getattr(self, "skip_log_dir", None)
        if folder is not None:
            for path in sorted(Path(folder).glob("skipped-*.jsonl")):
                log.extend(BadInputLog.load(path))
        return log


if __name__ == "__main__":
    from builder.cli import main

    raise SystemExit(main())
