"""Every drawing: the genotype (path and cell), the search and run reports' figures, overlays."""

from autodeeplab.viz.genotype import render_cell, render_genotype, render_path
from autodeeplab.viz.overlay import colorize, overlay, save_png
from autodeeplab.viz.run_report import plot_training_curves, prediction_strip

__all__ = [
    "colorize",
    "overlay",
    "plot_training_curves",
    "prediction_strip",
    "render_cell",
    "render_genotype",
    "render_path",
    "save_png",
]
