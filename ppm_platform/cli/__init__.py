"""The ``ppm`` command line (entry point ``ppm = "ppm_platform.cli:main"``).

Modules:

``commands``       the click group and every command (demo, run, backfill, summary, rank, serve, doctor, synth,
                   report)
``errors``         exit codes, :class:`~ppm_platform.cli.errors.PPMError` and the group that turns any error into
                   one line
``orchestration``  the Dagster child process (``dagster job execute`` / ``dagster asset materialize``): its
                   environment, its ``dagster.yaml``, its event stream and log file
``doctor``         the ``ppm doctor`` probes
``summary``        the run summary printer

The CLI drives Dagster only through a child process, so nothing here imports Dagster and a CLI run is the same
run the Dagster UI shows.
"""

from ppm_platform.cli.commands import main

__all__ = ["main"]
