"""`python -m corert ...` is the same as the `corert` console script."""
import sys

from corert.cli import main

if __name__ == "__main__":
    sys.exit(main())
