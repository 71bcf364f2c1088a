"""Entry point of the frozen app: the same `medad-viewer` command (GUI, info, score, eval, report)."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from medad_viewer.cli import main

    sys.exit(main())
