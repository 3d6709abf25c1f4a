"""``python -m cxnlp``: the same command line as ``cxnlp``."""

from .cli import main

if __name__ == "__main__":
    main()
