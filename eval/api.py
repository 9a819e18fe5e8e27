"""The Python entry point: ``evaluate`` does what ``python -m eval`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.runner import RunSettings, run_evaluation


def evaluate(
    model: str | None,
    dataset: str,
    config: str | None,
    *,
    out: str | Path,
    split: str = "test",
    mode: str = "generate",
    baseline: str | None = None,
    blind: bool = False,
    circular: bool = False,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    dtype: str = "auto",
    device_map: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
    backend: str = "hf",
    num_workers: int = 2,
    limit: int | None = None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    cache_dir: str | None = None,
) -> dict[str, Any] | None:
    """Score a model (or a baseline) on one split of a built CrossMed config.

    A second call with the same settings and ``out`` resumes the run: finished
    questions are skipped. The run folder receives ``predictions.jsonl``,
    ``results.json``, ``report.md`` and plots. While the call runs, the objects
    that existed before it are exempt from garbage collection (``gc.freeze``),
    unless the caller had frozen objects already.

    Args:
        model: a Hub model id or a local model folder; None with ``baseline``.
        dataset: a built CrossMed folder (Hub layout) or a Hub dataset id.
        config: the config name, e.g. ``"unrelated"``; None for the default config.
        out: the run folder.
        split: the split to score.
        mode: ``"generate"`` (greedy text, then answer extraction) or
            ``"likelihood"`` (next-token scores of the letters A-D).
        baseline: ``"random"`` or ``"prior"`` to score a weight-free baseline instead of a model.
        blind: leave the image out of every prompt.
        circular: ask each question at the four rotations of its options; it
            counts as correct only when all four answers are.
        batch_size: questions per forward pass; halved on CUDA out of memory.
        max_new_tokens: the generated-token limit per question in generate mode.
        dtype: ``"auto"`` (bfloat16 on CUDA, float32 on CPU), ``"float32"``,
            ``"bfloat16"`` or ``"float16"``.
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"``); None puts
            the whole model on one device.
        trust_remote_code: allow the model repository's own Python code to run.
        allow_pickle_weights: allow ``.bin`` (pickle) weights when the model has no safetensors files.
        backend: ``"hf"`` (transformers) or ``"vllm"`` (generate mode only; needs ``pip install vllm``).
        num_workers: DataLoader worker processes that decode images and run
            the processor while the model runs, each keeping two batches
            ready; 0 prepares batches in the main process.
        limit: score only the first ``limit`` questions; None for all.
        seed: seed of the random baseline and of the bootstrap.
        n_bootstrap: bootstrap resamples for the 95% confidence intervals.
        cache_dir: the ``datasets`` cache folder; None for its default.

    Returns:
        The results dict written to ``results.json``; None in the non-main
        processes of a distributed run.

    Raises:
        ValueError: for an invalid setting, or when ``out`` contains predictions made with other settings.
    """
    settings = RunSettings(
        dataset=str(dataset),
        config=config,
        model=model,
        split=split,
        mode=mode,
        baseline=baseline,
        blind=blind,
        circular=circular,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        dtype=dtype,
        device_map=device_map,
        trust_remote_code=trust_remote_code,
        allow_pickle_weights=allow_pickle_weights,
        backend=backend,
        num_workers=num_workers,
        limit=limit,
        seed=seed,
        n_bootstrap=n_bootstrap,
        cache_dir=cache_dir,
    )
    return run_evaluation(settings, Path(out))
