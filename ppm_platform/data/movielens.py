"""MovieLens-100K -> canonical tables (DESIGN.md §2).

Mapping: ``u.data`` -> interactions with ``click = rating >= 4`` and ``order = rating == 5`` (a documented
proxy: the strongest positive signal); ``u.item`` (latin-1) -> items with title "Title (year)", categories =
genres, ``image_uri`` = ``posters/{item_id}.jpg`` where present, ``created_at`` = release date, but never
later than the item's first rating (a handful of ratings predate the listed release date; an item is in
the catalog by the time it is rated); ``u.user`` -> users; ``tags_ml_latest_small.tsv`` -> queries
(free-text tags as query text).

The dataset's license forbids redistribution: it is read from ``Settings.data_dir`` and never copied into
the repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ppm_platform.data.schemas import MOVIELENS_GENRES


def read_items(data_dir: Path) -> pd.DataFrame:
    """Read ``u.item`` (latin-1, ``|``-separated, 19 genre flags) into the raw items frame
    (item_id, title, image_uri, categories, release_date)."""
    cols = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *MOVIELENS_GENRES]
    raw = pd.read_csv(data_dir / "u.item", sep="|", header=None, names=cols, encoding="latin-1",
                      dtype={"title": str, "release_date": str})
    flags = raw[list(MOVIELENS_GENRES)].to_numpy(dtype=bool)
    genres = np.array(MOVIELENS_GENRES, dtype=object)
    posters = data_dir / "posters"
    return pd.DataFrame({
        "item_id": raw["item_id"],
        "title": raw["title"],
        "image_uri": [str(posters / f"{i}.jpg") if (posters / f"{i}.jpg").exists() else None
                      for i in raw["item_id"]],
        "categories": [list(genres[f]) for f in flags],
        "release_date": pd.to_datetime(raw["release_date"], format="%d-%b-%Y", utc=True, errors="coerce"),
    })


def read_users(data_dir: Path) -> pd.DataFrame:
    """Read ``u.user`` (user_id, age, gender, occupation; the zip code is not used)."""
    return pd.read_csv(data_dir / "u.user", sep="|", header=None,
                       names=["user_id", "age", "gender", "occupation", "zip"]).drop(columns="zip")


def read_interactions(data_dir: Path) -> pd.DataFrame:
    """Read ``u.data`` (tab-separated user, item, rating, unix seconds) as impressions with click/order labels."""
    raw = pd.read_csv(data_dir / "u.data", sep="\t", header=None,
                      names=["user_id", "item_id", "rating", "unix_ts"])
    return pd.DataFrame({
        "user_id": raw["user_id"],
        "item_id": raw["item_id"],
        "event_timestamp": pd.to_datetime(raw["unix_ts"], unit="s", utc=True),
        "click": (raw["rating"] >= 4).astype("int8"),
        "order": (raw["rating"] == 5).astype("int8"),
    })


def read_queries(data_dir: Path) -> pd.DataFrame:
    """Read ``tags_ml_latest_small.tsv`` (item_id, tag, timestamp) as search queries for the tagged item."""
    path = data_dir / "tags_ml_latest_small.tsv"
    if not path.exists():
        return pd.DataFrame({"query": pd.Series(dtype=str), "item_id": pd.Series(dtype="int64"),
                             "event_timestamp": pd.Series(dtype="datetime64[us, UTC]")})
    raw = pd.read_csv(path, sep="\t", dtype={"tag": str}, keep_default_na=False)
    return pd.DataFrame({"query": raw["tag"], "item_id": raw["item_id"],
                         "event_timestamp": pd.to_datetime(raw["timestamp"], unit="s", utc=True)})


def load_movielens(data_dir: Path, max_items: int | None = None) -> dict[str, pd.DataFrame]:
    """Read MovieLens-100K into raw frames shaped like the canonical tables (before validation).

    Args:
        data_dir: folder with the GroupLens files and ``posters/``.
        max_items: keep only items with ``item_id <= max_items`` and the interactions/queries on them
            (a real-data subset for CI; ids are popularity-ordered in ml-100k, so low ids are dense).

    Returns:
        ``{"items", "users", "interactions", "queries"}`` frames.
    """
    items = read_items(data_dir)
    users = read_users(data_dir)
    inter = read_interactions(data_dir)
    queries = read_queries(data_dir)
    if max_items is not None:
        items = items[items["item_id"] <= max_items]
        inter = inter[inter["item_id"] <= max_items]
        queries = queries[queries["item_id"] <= max_items]
    first_seen = inter.groupby("item_id")["event_timestamp"].min()
    created = items["release_date"].copy()
    fs = items["item_id"].map(first_seen)
    created = created.where(created.notna() & (fs.isna() | (created <= fs)), fs)
    # an item with neither a release date nor ratings: in the catalog since the epoch
    created = created.fillna(pd.Timestamp("1970-01-01", tz="UTC"))
    items = items.drop(columns="release_date").assign(created_at=created)
    return {"items": items.reset_index(drop=True), "users": users, "interactions": inter.reset_index(drop=True),
            "queries": queries.reset_index(drop=True)}
