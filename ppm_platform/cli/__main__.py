"""``python -m ppm_platform.cli ...``: the ``ppm`` command (tests and benchmarks start it this way)."""

from ppm_platform.cli import main

main()
