"""Auto-DeepLab: hierarchical neural architecture search for semantic segmentation."""

from autodeeplab.genotype import (
    PAPER_GENOTYPE,
    Genotype,
    GenotypeError,
    load_genotype,
    save_genotype,
    search_space_size,
)
from autodeeplab.ops import OPS, PRIMITIVES

__version__ = "0.1.0"

__all__ = [
    "OPS",
    "PAPER_GENOTYPE",
    "PRIMITIVES",
    "Genotype",
    "GenotypeError",
    "__version__",
    "load_genotype",
    "save_genotype",
    "search_space_size",
]
