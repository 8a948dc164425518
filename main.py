"""Start sdstudio from a checkout: ``python main.py [IMAGE...]``."""

import sys

from sdstudio.app import main

if __name__ == "__main__":
    sys.exit(main())
