"""Entry point of the packaged build: the app, or the command line when started as ``sdstudio-cli``.

One program serves both so that the build holds one copy of the Python
modules: ``sdstudio-cli`` is a link to ``sdstudio`` on Linux, and a console
program built from this same script on Windows.
"""

import sys
from pathlib import Path


def main() -> int:
    """Run the command line or the app, by the name this program was started as."""
    if Path(sys.argv[0]).stem == "sdstudio-cli":
        from sdstudio.cli import main as cli_main

        return cli_main()
    from sdstudio.app import main as app_main

    return app_main()


if __name__ == "__main__":
    sys.exit(main())
