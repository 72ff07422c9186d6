"""The asset groups of the code location, one package each (``<group>/assets.py`` beside the checks on those
assets in ``<group>/checks.py``), as Dagster's ``hooli`` and ``project_fully_featured`` lay them out; each
package's ``defs`` (or ``build_defs`` where it needs the settings) is merged in ``definitions.py``."""
