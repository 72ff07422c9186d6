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
