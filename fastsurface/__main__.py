"""``python -m fastsurface`` runs the command line."""

import sys

from fastsurface.cli import main

sys.exit(main())
