"""The continuous search space: supernet, search cell and decoding (paper §3-4)."""

from autodeeplab.search.cell import MixedOp, SearchCell
from autodeeplab.search.decode import decode, decode_cell, viterbi_path
from autodeeplab.search.network import SearchNetwork

__all__ = ["MixedOp", "SearchCell", "SearchNetwork", "decode", "decode_cell", "viterbi_path"]
