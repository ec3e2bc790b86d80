"""Entry point for ``python -m corridor``."""

from __future__ import annotations

from corridor.cli import main

if __name__ == "__main__":
    main()
