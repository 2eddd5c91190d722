#!/usr/bin/env python3
"""The chaos script: `python scripts/chaos.py [options]` is `lynx chaos [options]` (see --help)."""

import sys

from lynx.cli import main

if __name__ == "__main__":
    main(["chaos", *sys.argv[1:]])
