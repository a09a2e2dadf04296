"""Auto-DeepLab: hierarchical neural architecture search for semantic segmentation.

The short API: ``create_model``, ``list_models``, ``load_model``, and the stages ``search``,
``train`` and ``compare`` (:mod:`autodeeplab.api`); genotypes and the op set below.
"""

from autodeeplab._version import __version__
from autodeeplab.api import compare, create_model, list_models, load_model, search, train
from autodeeplab.genotype import (
    PAPER_GENOTYPE,
    Genotype,
    GenotypeError,
    load_genotype,
    save_genotype,
    search_space_size,
)
from autodeeplab.ops import OPS, PRIMITIVES

__all__ = [
    "OPS",
    "PAPER_GENOTYPE",
    "PRIMITIVES",
    "Genotype",
    "GenotypeError",
    "__version__",
    "compare",
    "create_model",
    "list_models",
    "load_model",
    "search",
    "train",
    "load_genotype",
    "save_genotype",
    "search_space_size",
]
