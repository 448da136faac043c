"""`python -m mtcmpi`: see mtcmpi.cli."""
import sys

from mtcmpi.cli import main

if __name__ == "__main__":
    sys.exit(main())
