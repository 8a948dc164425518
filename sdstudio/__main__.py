"""``python -m sdstudio`` starts the desktop app."""

import sys

from sdstudio.app import main

sys.exit(main())
