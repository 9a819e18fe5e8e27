"""Source readers, one module per source, looked up by source name.

Readers are imported on first use so that code that only needs the registry
(the builder script, the card) does not import pydicom or nibabel.
"""

from __future__ import annotations

import importlib

from builder.mat import SOURCES, check_choice
from builder.sources.base import Case, ItemSpec, Sample, SourceReader

READER_CLASSES: dict[str, str] = {
    "chexpert": "builder.sources.chexpert:CheXpertReader",
    "siim": "builder.sources.siim:SIIMReader",
    "brats": "builder.sources.brats:BraTSReader",
    "mosmed": "builder.sources.mosmed:MosMedReader",
}


def reader_class(source: str) -> type[SourceReader]:
    """Return the reader class for a source name such as ``"brats"``."""
    check_choice("source", source, SOURCES)
    module_name, class_name = READER_CLASSES[source].split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["Case", "ItemSpec", "Sample", "SourceReader", "READER_CLASSES", "reader_class"]
