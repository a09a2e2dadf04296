"""The search space (paper §3-4): the supernet and its cell, their relaxation and decoding, and
the cost and memory models of the space. The supernet's arguments are a
:class:`~autodeeplab.trellis.SupernetSpec`."""

from autodeeplab.space.cell import MixedOp, SearchCell
from autodeeplab.space.decode import decode, decode_cell, viterbi_path
from autodeeplab.space.network import SearchNetwork
from autodeeplab.trellis import SupernetSpec

__all__ = [
    "MixedOp",
    "SearchCell",
    "SearchNetwork",
    "SupernetSpec",
    "decode",
    "decode_cell",
    "viterbi_path",
]
