"""``python -m autodeeplab`` runs the command line."""

import sys

from autodeeplab.cli import main

sys.exit(main())
