"""Entry script of the PyInstaller bundle: the same as the `sluice` console script."""

import sys

from sluice.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
