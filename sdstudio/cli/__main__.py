"""``python -m sdstudio.cli`` runs the command line."""

import sys

from sdstudio.cli import main

sys.exit(main())
