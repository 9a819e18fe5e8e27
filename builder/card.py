"""The dataset card: descriptions, source terms, citations and the generated card text.

The exported card is made from the repository README (the part between the
``<!-- card:start -->`` and ``<!-- card:end -->`` markers), a generated table of
every config's train and test triplets, and the terms and citation of each
source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from builder.mat import TRIPLETS_BY_SOURCE
from builder.protocols import Protocol

DESCRIPTION = (
    "CrossMed is a four-option visual question answering benchmark built from CheXpert, SIIM-ACR, "
    "BraTS 2020 and MosMedData. Every question carries a Modality-Anatomy-Task triplet, and each config "
    "decides which triplets training may see, to test whether a vision-language model generalizes to "
    "combinations it never saw."
)
HOMEPAGE = ""
LICENSE = "other"

CITATION = """\
@misc{crossmed,
  title  = {CrossMed: a benchmark of compositional generalization for medical vision-language models},
  author = {{CrossMed maintainers}},
  year   = {2026},
  note   = {Dataset and software}
}"""

SOURCE_INFO: dict[str, dict[str, str]] = {
    "chexpert": {
        "title": "CheXpert v1.0",
        "url": "https://stanfordmlgroup.github.io/competitions/chexpert/",
        "terms": "Stanford University School of Medicine CheXpert Dataset Research Use Agreement: "
        "non-commercial research use, no redistribution.",
        "citation": "@inproceedings{irvin2019chexpert,\n  title={CheXpert: A Large Chest Radiograph Dataset with "
        "Uncertainty Labels and Expert Comparison},\n  author={Irvin, Jeremy and others},\n"
        "  booktitle={AAAI Conference on Artificial Intelligence},\n  year={2019}\n}",
    },
    "siim": {
        "title": "SIIM-ACR Pneumothorax Segmentation",
        "url": "https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation",
        "terms": "Released for the 2019 Kaggle competition under its rules: non-commercial research use. "
        "The images come from the NIH ChestX-ray14 collection.",
        "citation": "@misc{siim2019pneumothorax,\n  title={SIIM-ACR Pneumothorax Segmentation},\n"
        "  author={{Society for Imaging Informatics in Medicine and American College of Radiology}},\n"
        "  howpublished={Kaggle competition},\n  year={2019}\n}",
    },
    "brats": {
        "title": "BraTS 2020 (MICCAI Brain Tumor Segmentation Challenge)",
        "url": "https://www.med.upenn.edu/cbica/brats2020/data.html",
        "terms": "Research use on condition that the BraTS papers are cited; no redistribution of the images.",
        "citation": "@article{menze2015brats,\n  title={The Multimodal Brain Tumor Image Segmentation Benchmark "
        "(BRATS)},\n  author={Menze, Bjoern H. and others},\n  journal={IEEE Transactions on Medical Imaging},\n"
        "  year={2015}\n}\n@article{bakas2017advancing,\n  title={Advancing The Cancer Genome Atlas glioma MRI "
        "collections with expert segmentation labels and radiomic features},\n  author={Bakas, Spyridon and "
        "others},\n  journal={Scientific Data},\n  year={2017}\n}\n@misc{bakas2018identifying,\n  title={"
        "Identifying the Best Machine Learning Algorithms for Brain Tumor Segmentation, Progression Assessment, "
        "and Overall Survival Prediction in the BRATS Challenge},\n  author={Bakas, Spyridon and others},\n"
        "  howpublished={arXiv:1811.02629},\n  year={2018}\n}",
    },
    "mosmed": {
        "title": "MosMedData: COVID19_1110",
        "url": "https://mosmed.ai/datasets/covid191110/",
        "terms": "CC BY-NC-ND 3.0, (c) 2020 Research and Practical Clinical Center for Diagnostics and "
        "Telemedicine Technologies of the Moscow Health Care Department: attribution, no commercial use, "
        "no distribution of modified versions.",
        "citation": "@misc{morozov2020mosmeddata,\n  title={MosMedData: Chest CT Scans With COVID-19 Related "
        "Findings Dataset},\n  author={Morozov, S. P. and others},\n  howpublished={arXiv:2005.06465},\n"
        "  year={2020}\n}",
    },
}

CARD_START = "<!-- card:start -->"
CARD_END = "<!-- card:end -->"


def readme_card_section(readme: Path) -> str:
    """Return the part of the README between the card markers, or an empty string when there are none."""
    if not readme.is_file():
        return ""
    match = re.search(re.escape(CARD_START) + r"(.*?)" + re.escape(CARD_END), readme.read_text(encoding="utf-8"), re.S)
    return match.group(1).strip() if match else ""


def protocol_table(protocols: list[Protocol]) -> str:
    """Return a Markdown table of each config's train and test triplets and which test factors training sees."""
    lines = [
        "| config | train and validation triplets | test triplets | modality seen | anatomy seen | task seen |",
        "|---|---|---|---|---|---|",
    ]
    for protocol in protocols:
        seen = protocol.seen_factors()
        lines.append(
            f"| `{protocol.name}` | {', '.join(t.name for t in protocol.train)} | "
            f"{', '.join(t.name for t in protocol.test)} | "
            + " | ".join("yes" if seen[axis] else "no" for axis in ("modality", "anatomy", "task"))
            + " |"
        )
    return "\n".join(lines)


def sources_section(pixels_shipped: Mapping[str, bool]) -> str:
    """Return the Markdown section on each source: triplets, terms, whether pixels ship, and citation."""
    parts = ["## Sources, terms and citations"]
    for source, info in SOURCE_INFO.items():
        triplets = ", ".join(triplet.name for triplet in TRIPLETS_BY_SOURCE[source])
        shipped = pixels_shipped.get(source, True)
        pixels = (
            "Images are included."
            if shipped
            else "Images are **not** included: rows carry `source_file`, and users who hold the source "
            "rebuild the images locally with `python -m builder.publish restore` (same ids, questions and answers)."
        )
        parts.append(
            f"### {info['title']}\n\nTriplets: {triplets}. Source: {info['url']}\n\nTerms: {info['terms']} "
            f"{pixels}\n\n```bibtex\n{info['citation']}\n```"
        )
    return "\n\n".join(parts)


SYNTHETIC_NOTE = (
    "> **Synthetic build.** These rows were built from the synthetic phantoms of "
    "`python crossmed.py generate-sources`, not from the four real datasets. Use them to try the "
    "tools, never to report results."
)


def card_body(
    readme: Path,
    protocols: list[Protocol],
    pixels_shipped: Mapping[str, bool],
    changelog: str = "",
    synthetic: bool = False,
) -> str:
    """Assemble the Markdown body of the exported card (everything below the YAML header)."""
    sections = [
        "# CrossMed",
        SYNTHETIC_NOTE if synthetic else "",
        DESCRIPTION,
        readme_card_section(readme),
        "## Configs\n\n" + protocol_table(protocols),
        sources_section(pixels_shipped),
        f"## Citation\n\n```bibtex\n{CITATION}\n```",
    ]
    if changelog:
        sections.append("## Changelog\n\n" + changelog.strip())
    return "\n\n".join(section for section in sections if section) + "\n"
