"""Run ``python -m eval``; see :mod:`eval.cli`."""

from __future__ import annotations

from eval.cli import main

raise SystemExit(main())
