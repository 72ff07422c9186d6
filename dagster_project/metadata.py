"""Dagster metadata from the pipeline stages' result dicts, as the UI shows it best.

Numbers stay numbers (the UI plots them across materializations), floats rounded to 4 significant digits;
a list of flat records (``epochs``, ``per_day``) becomes a table; other nested values JSON (rounded).
Model stages add their kept epoch and their plots. A plot is a markdown entry with the PNG embedded as a
``data:`` URI (:func:`ppm_platform.reporting.plots.markdown_image`): the UI's markdown sanitizer allows
``data:`` image sources, and it shows a markdown entry of 1000 characters or more (every PNG) behind its
"[Show Markdown]" link, which opens the image; the per-epoch table next to it is shown inline.
"""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg

#: significant digits of float metadata
SIGNIFICANT = 4


def round_sig(x: float, digits: int = SIGNIFICANT) -> float:
    """``x`` rounded to ``digits`` significant digits (NaN and infinities unchanged)."""
    if not math.isfinite(x) or x == 0:
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def rounded(v):
    """``v`` with every float in it (nested lists and dicts too) rounded by :func:`round_sig`."""
    if isinstance(v, float):
        return round_sig(v)
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [rounded(x) for x in v]
    return v


def num(v) -> dg.MetadataValue:
    """A number as metadata (floats rounded; None, NaN and bools as text, which the UI does not plot)."""
    if v is None or isinstance(v, bool) or (isinstance(v, float) and not math.isfinite(v)):
        return dg.MetadataValue.text(str(v))
    return dg.MetadataValue.float(round_sig(float(v))) if isinstance(v, float) else dg.MetadataValue.int(int(v))


_SCALARS = (str, int, float, bool, type(None))


def _is_records(v) -> bool:
    return (isinstance(v, list) and bool(v) and all(isinstance(r, dict) for r in v)
            and all(isinstance(x, _SCALARS) for r in v for x in r.values()))


def _column_type(values: list) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool}:
        return "bool"
    if kinds and kinds <= {int, float}:
        return "int" if kinds == {int} else "float"
    return "string"


def table(records: list[dict]) -> dg.MetadataValue:
    """Flat records (scalar values; keys in first-seen order) as a Dagster table, floats rounded."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    schema = dg.TableSchema([dg.TableColumn(k, _column_type([r.get(k) for r in records])) for k in keys])
    return dg.MetadataValue.table([dg.TableRecord({k: rounded(r.get(k)) for k in keys}) for r in records],
                                  schema=schema)


def keyed_table(rows: dict[str, dict], key: str) -> dg.MetadataValue:
    """``{name: {field: value or {sub: value}}}`` (e.g. test metrics by slice and task) as a table with one row
    per name: column ``key`` = the name, nested fields flattened to ``<field>_<sub>``."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}_") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out
    return table([{key: name, **flat(r)} for name, r in rows.items()])


def metadata_from(result: dict, skip: tuple[str, ...] = ()) -> dict:
    """Metadata of a stage result: numbers (floats rounded), text, tables of flat record lists, JSON."""
    md = {}
    for k, v in result.items():
        if k in skip:
            continue
        if v is None or isinstance(v, (bool, int, float)):
            md[k] = num(v)
        elif isinstance(v, str):
            md[k] = dg.MetadataValue.text(v)
        elif _is_records(v):
            md[k] = table(v)
        else:
            md[k] = dg.MetadataValue.json(rounded(v))
    return md


def kept_epoch(epochs: list[dict]) -> int | None:
    """The epoch whose weights the trainers keep: the first with the best finite ``valid_click_auc``
    (``ppm_platform.training``: strict improvement keeps the earlier of equal epochs); None if none is finite."""
    finite = [e for e in epochs if isinstance(e.get("valid_click_auc"), (int, float))
              and math.isfinite(e["valid_click_auc"])]
    if not finite:
        return None
    best = max(finite, key=lambda e: e["valid_click_auc"])
    return int(best.get("epoch", epochs.index(best) + 1))


def relative(path, root: Path) -> str:
    """``path`` relative to the artifacts folder ``root`` (as shown in the UI), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def plot_metadata(result: dict, settings, name: str, label: str, kept: int | None = None) -> dict:
    """The PNG plots of a model stage (training curves with the kept epoch marked, AUC by slice) as markdown
    entries with the image embedded, each followed by its file relative to the artifacts folder
    (``plot_<kind>_file``; written under ``settings.reports_dir / "plots"``). Plotting lives in
    ``ppm_platform.reporting``."""
    from ppm_platform.reporting.plots import markdown_image, model_plots

    md = {}
    for kind, path in model_plots(result, settings.reports_dir / "plots", name, label, kept_epoch=kept).items():
        md[f"plot_{kind}"] = dg.MetadataValue.md(markdown_image(path, f"{label} {kind.replace('_', ' ')}"))
        md[f"plot_{kind}_file"] = dg.MetadataValue.text(relative(path, settings.artifacts_dir))
    return md


def model_metadata(result: dict, settings, name: str, label: str, skip: tuple[str, ...] = ()) -> dict:
    """A trained model's metadata: :func:`metadata_from` (``epochs`` as a table), the kept epoch and its
    validation click AUC, and the plots (:func:`plot_metadata`)."""
    md = metadata_from(result, skip=skip)
    kept = kept_epoch(result.get("epochs") or [])
    if kept is not None:
        row = next(e for e in result["epochs"] if int(e.get("epoch", 0)) == kept)
        md["kept_epoch"] = dg.MetadataValue.int(kept)
        md["kept_valid_click_auc"] = num(row["valid_click_auc"])
    return {**md, **plot_metadata(result, settings, name, label, kept)}
