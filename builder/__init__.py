"""Build the CrossMed benchmark from its four public sources.

The package reads CheXpert, SIIM-ACR, BraTS 2020 and MosMedData in the layouts
users download, turns their images into four-option questions tagged with a
Modality-Anatomy-Task triplet, and writes the protocol configs.
"""
