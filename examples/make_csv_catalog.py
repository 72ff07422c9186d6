#!/usr/bin/env python
"""Write a tiny "bring your own catalog" example: a shop of coloured mugs, lamps and posters as canonical
CSV tables plus one rendered image per item (PIL), in the layout ``PPM_DATASET=canonical`` reads
(docs/byo-catalog.md, DESIGN.md §2):

    <out>/items.csv         item_id,title,image_uri,categories,created_at   (categories "a|b", image path relative)
    <out>/users.csv         user_id,age,gender,occupation
    <out>/interactions.csv  user_id,item_id,event_timestamp,click,order       (impressions; order implies click)
    <out>/queries.csv       query,item_id,event_timestamp                     (search query -> clicked item)
    <out>/images/<item_id>.png

Clicks follow a planted preference (each user likes one colour and one product type), so the models have a
real signal to learn. Every 10th item has no image (``image_uri`` empty), as real catalogs do.

Usage:
    python examples/make_csv_catalog.py --out /tmp/my_catalog [--items 30 --users 50 --interactions 2000]
    PPM_DATASET=canonical PPM_DATA_DIR=/tmp/my_catalog ppm demo
"""

from __future__ import annotations

import argparse
import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 200), "yellow": (230, 200, 40),
           "purple": (130, 50, 160)}
KINDS = {"mug": "ellipse", "lamp": "triangle", "poster": "rectangle"}
STYLES = ["classic", "modern", "vintage", "minimal"]


def render(path: Path, colour: tuple[int, int, int], shape: str, size: int = 128) -> None:
    """A size x size PNG: one filled shape of ``colour`` on a light background."""
    img = Image.new("RGB", (size, size), (245, 245, 240))
    d = ImageDraw.Draw(img)
    m = size // 6
    if shape == "ellipse":
        d.ellipse([m, m, size - m, size - m], fill=colour)
    elif shape == "triangle":
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=colour)
    else:
        d.rectangle([m, m, size - m, size - m], fill=colour)
    img.save(path, format="PNG")


def make_catalog(out: Path, n_items: int = 30, n_users: int = 50, n_interactions: int = 2000, seed: int = 0) -> dict:
    """Write the example catalog to ``out`` and return the row counts per table."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    items = []
    for i in range(1, n_items + 1):
        colour = list(COLOURS)[(i - 1) % len(COLOURS)]
        kind = list(KINDS)[((i - 1) // len(COLOURS)) % len(KINDS)]
        style = STYLES[int(rng.integers(len(STYLES)))]
        image_uri = ""
        if i % 10 != 0:
            image_uri = f"images/{i}.png"
            render(out / image_uri, COLOURS[colour], KINDS[kind])
        items.append({"item_id": i, "title": f"{style.title()} {colour} {kind}", "image_uri": image_uri,
                      "categories": f"{kind}|{colour}|{style}",
                      "created_at": (t0 + timedelta(days=int(rng.integers(0, 10)))).isoformat()})
    users = [{"user_id": u, "age": int(rng.integers(18, 70)), "gender": str(rng.choice(["F", "M"])),
              "occupation": str(rng.choice(["engineer", "artist", "student", "doctor"]))}
             for u in range(1, n_users + 1)]
    like_colour = {u["user_id"]: list(COLOURS)[int(rng.integers(len(COLOURS)))] for u in users}
    like_kind = {u["user_id"]: list(KINDS)[int(rng.integers(len(KINDS)))] for u in users}
    start = t0 + timedelta(days=14)
    seconds = np.sort(rng.uniform(0, 60 * 86400, n_interactions))
    inter, queries = [], []
    for s in seconds:
        u = int(rng.integers(1, n_users + 1))
        it = items[int(rng.integers(n_items))]
        kind, colour, _ = it["categories"].split("|")
        p = 0.08 + 0.35 * (colour == like_colour[u]) + 0.35 * (kind == like_kind[u])
        click = int(rng.random() < p)
        order = int(click and rng.random() < 0.3 + 0.4 * (colour == like_colour[u]))
        ts = (start + timedelta(seconds=float(s))).isoformat()
        inter.append({"user_id": u, "item_id": it["item_id"], "event_timestamp": ts, "click": click, "order": order})
        if click and rng.random() < 0.3:
            queries.append({"query": f"{colour} {kind}", "item_id": it["item_id"], "event_timestamp": ts})
    tables = {"items": items, "users": users, "interactions": inter, "queries": queries}
    for name, rows in tables.items():
        with open(out / f"{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return {name: len(rows) for name, rows in tables.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    ap.add_argument("--items", type=int, default=30)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--interactions", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    counts = make_catalog(a.out, a.items, a.users, a.interactions, a.seed)
    print(f"wrote {a.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"next: PPM_DATASET=canonical PPM_DATA_DIR={a.out.resolve()} ppm demo")


if __name__ == "__main__":
    main()
