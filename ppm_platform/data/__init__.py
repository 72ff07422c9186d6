"""Data in: canonical table schemas, the MovieLens reader and the bring-your-own-catalog loader, validation with
quarantine, ingest into canonical parquet, the global time split, item content (title text, catalog images) and
synthetic catalogs at any scale."""
