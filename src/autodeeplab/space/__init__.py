"""The search space (paper §3-4): the supernet and its cell, their relaxation and decoding, and
the cost and memory models of the space."""

from autodeeplab.space.cell import MixedOp, SearchCell
from autodeeplab.space.decode import decode, decode_cell, viterbi_path
from autodeeplab.space.network import SearchNetwork

__all__ = ["MixedOp", "SearchCell", "SearchNetwork", "decode", "decode_cell", "viterbi_path"]
