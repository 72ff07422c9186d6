"""Turn a pipeline stage's result dict into Dagster metadata (numbers stay numbers; the rest is JSON)."""

import dagster as dg


def metadata_from(result: dict, skip: tuple[str, ...] = ()) -> dict:
    md = {}
    for k, v in result.items():
        if k in skip:
            continue
        if isinstance(v, bool) or v is None:
            md[k] = dg.MetadataValue.text(str(v))
        elif isinstance(v, (int, float)):
            md[k] = v
        elif isinstance(v, str):
            md[k] = dg.MetadataValue.text(v)
        else:
            md[k] = dg.MetadataValue.json(v)
    return md


def plot_metadata(result: dict, out_dir, name: str, label: str) -> dict:
    """PNG plots of a model stage (training curves, AUC by slice) as markdown metadata with the image embedded
    (base64; renders inline in the UI) plus each PNG's path. Plotting lives in ``ppm_platform.reporting``."""
    from ppm_platform.reporting.plots import markdown_image, model_plots

    md = {}
    for kind, path in model_plots(result, out_dir, name, label).items():
        md[f"plot_{kind}"] = dg.MetadataValue.md(markdown_image(path, f"{label} {kind.replace('_', ' ')}"))
        md[f"plot_{kind}_path"] = dg.MetadataValue.path(str(path))
    return md
