"""Start sdstudio from a checkout or a frozen build: ``python main.py [IMAGE...]``."""

import sys

from sdstudio.app import main

if __name__ == "__main__":
    sys.exit(main())
