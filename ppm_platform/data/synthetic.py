"""Synthetic canonical tables at any scale: a catalog, users and impressions with real content signal.

The generator writes the layout :func:`ppm_platform.data.loaders.load_canonical_dir` reads
(``items.parquet``, ``users.parquet``, ``interactions.parquet``, ``queries.parquet`` + ``images/<id>.jpg``),
so ``PPM_DATASET=canonical PPM_DATA_DIR=<out>`` runs the whole pipeline on it unchanged.

Generative story (every random draw comes from one ``numpy.random.Generator`` seeded by ``seed``, so the
same arguments give byte-identical files):

- ``n_topics`` latent topics, each with a word list, a colour and a shape. An item has one topic; its
  title is three words of its topic's list plus a generic adjective and a model number; its 64x64 JPEG
  image is the topic's shape in the topic's colour (jittered position, size, shade) on a light
  background; ``categories`` = ``[topic, first title word]`` (the entities of entity prediction).
- Item popularity is Zipf: the item of popularity rank ``r`` is shown with probability ``∝ r^-zipf_a``.
- A share ``cold_frac`` of the items is created late (uniformly in the last ``cold_window`` of the time
  window) and is shown only after its ``created_at`` (cold start).
- A user has a topic preference vector ``~ Dirichlet(user_alpha)`` (peaked) and an activity level
  (log-normal); impressions pick users by activity.
- ``P(click) = sigmoid(click_bias + click_beta * (n_topics * pref[user, topic(item)] - 1) + item_quality)``
  and ``P(order | click) = sigmoid(order_bias + order_beta * (n_topics * pref - 1))``: the label depends on
  the (user taste, item content) match, which only a model that sees the title / image (or learns the
  item from IDs) can exploit. ``order`` implies ``click`` (DESIGN.md §2).

Memory: impressions are generated and written in time-ordered chunks of ``chunk_rows`` (default 1 M), so
1e7 impressions need about ``chunk_rows`` x 60 bytes of RAM besides the catalog.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ppm_platform.data import schemas

#: topic -> (words, RGB colour, shape). Word lists are small on purpose: titles of one topic share words.
TOPICS: tuple[tuple[str, tuple[str, ...], tuple[int, int, int], str], ...] = (
    ("kitchen", ("kettle", "skillet", "whisk", "teapot", "ladle", "blender", "colander", "mug", "spatula",
                 "grater"), (200, 60, 40), "circle"),
    ("outdoor", ("tent", "lantern", "backpack", "compass", "hammock", "canteen", "sleeping-bag", "trekking",
                 "camp-stove", "poncho"), (40, 140, 60), "triangle"),
    ("electronics", ("headphones", "charger", "router", "keyboard", "monitor", "speaker", "webcam", "tablet",
                     "earbuds", "adapter"), (40, 80, 200), "square"),
    ("books", ("novel", "atlas", "cookbook", "biography", "anthology", "poetry", "memoir", "thriller",
               "dictionary", "almanac"), (120, 70, 30), "rectangle"),
    ("toys", ("puzzle", "robot", "doll", "blocks", "kite", "yo-yo", "plush", "marbles", "train-set",
              "spinning-top"), (230, 190, 20), "star"),
    ("fashion", ("scarf", "sneakers", "jacket", "handbag", "sunglasses", "belt", "beanie", "dress", "loafers",
                 "wristwatch"), (190, 40, 150), "diamond"),
    ("sports", ("racket", "dumbbell", "football", "yoga-mat", "helmet", "skipping-rope", "gloves", "shin-guard",
                "stopwatch", "water-bottle"), (20, 170, 170), "cross"),
    ("garden", ("trowel", "planter", "hose", "seeds", "pruner", "watering-can", "rake", "compost",
                "birdhouse", "wheelbarrow"), (100, 160, 20), "ring"),
)
ADJECTIVES = ("classic", "compact", "deluxe", "eco", "pro", "mini", "vintage", "smart", "premium", "basic",
              "ultra", "family")
GENDERS = ("F", "M")
OCCUPATIONS = ("student", "engineer", "artist", "doctor", "teacher", "writer", "retired", "other")
EPOCH_START = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator (see the module docstring for the generative story).

    Attributes:
        n_users, n_items, n_impressions: table sizes (rows).
        seed: the only source of randomness.
        n_topics: latent topics (<= ``len(TOPICS)``).
        zipf_a: Zipf exponent of item popularity (> 0; 1.0-1.2 is typical of e-commerce logs).
        cold_frac: share of items created late (cold start), in ``[0, 1)``.
        cold_window: those items are created uniformly in the last ``cold_window`` share of the window.
        days: length of the impression time window (days), starting at ``start``.
        start: ISO-8601 UTC start of the window.
        image_size: side of the square JPEG images (pixels); 0 = no images (``image_uri`` empty).
        click_bias, click_beta, order_bias, order_beta: logistic label model (see module docstring).
        queries_per_item: search queries generated per item (query matching text); 0 = no queries table.
        chunk_rows: impressions generated / written per chunk (memory bound).
    """

    n_users: int = 1000
    n_items: int = 500
    n_impressions: int = 100_000
    seed: int = 0
    n_topics: int = 8
    zipf_a: float = 1.1
    cold_frac: float = 0.1
    cold_window: float = 0.2
    days: int = 60
    start: str = EPOCH_START
    image_size: int = 64
    click_bias: float = -1.6
    click_beta: float = 0.9
    order_bias: float = -1.2
    order_beta: float = 0.6
    queries_per_item: int = 2
    chunk_rows: int = 1_000_000

    def validate(self) -> "SyntheticConfig":
        """Raise ``ValueError`` naming the field if a value is out of range; returns ``self``."""
        for name in ("n_users", "n_items", "n_impressions", "days", "chunk_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.n_topics <= len(TOPICS):
            raise ValueError(f"SyntheticConfig.n_topics must be in [1, {len(TOPICS)}], got {self.n_topics}")
        if not 0 <= self.cold_frac < 1 or not 0 < self.cold_window <= 1:
            raise ValueError(f"cold_frac must be in [0, 1) and cold_window in (0, 1], got "
                             f"{self.cold_frac}, {self.cold_window}")
        if self.zipf_a <= 0:
            raise ValueError(f"SyntheticConfig.zipf_a must be > 0, got {self.zipf_a}")
        if self.image_size < 0 or self.queries_per_item < 0:
            raise ValueError("image_size and queries_per_item must be >= 0")
        return self


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def render_image(topic: int, rng: np.random.Generator, size: int = 64) -> bytes:
    """JPEG bytes of one item image: the topic's shape in a jittered shade of its colour.

    Args:
        topic: index into :data:`TOPICS`.
        rng: consumed for position, size and shade (deterministic given its state).
        size: side in pixels.

    Returns:
        JPEG (quality 90) of a ``size x size`` RGB image.
    """
    from PIL import Image, ImageDraw

    _, _, colour, shape = TOPICS[topic]
    jitter = rng.integers(-30, 31, size=3)
    col = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter))
    bg = tuple(int(v) for v in rng.integers(225, 256, size=3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = size * float(rng.uniform(0.25, 0.4))
    cx, cy = (size / 2 + float(rng.uniform(-0.1, 0.1)) * size for _ in range(2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=col)
    elif shape == "ring":
        d.ellipse(box, outline=col, width=max(2, size // 10))
    elif shape == "square":
        d.rectangle(box, fill=col)
    elif shape == "rectangle":
        d.rectangle((cx - r, cy - r / 2, cx + r, cy + r / 2), fill=col)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx - r, cy), (cx, cy + r), (cx + r, cy)], fill=col)
    elif shape == "cross":
        w = r / 3
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=col)
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=col)
    else:  # star
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r / 2.5
            a = np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(a), cy - rad * np.sin(a)))
        d.polygon(pts, fill=col)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")


def generate(cfg: SyntheticConfig, out_dir: Path | str) -> dict:
    """Write the canonical tables of ``cfg`` into ``out_dir`` (created; existing files overwritten).

    Returns:
        ``{"items", "cold_items", "users", "impressions", "clicks", "orders", "queries", "images",
        "ctr", "seconds", "config", "out_dir"}`` (also saved as ``out_dir/synthetic.json``). ``ctr`` is
        the realised click rate; ``seconds`` is wall time.

    Raises:
        ValueError: a config field is out of range (see :meth:`SyntheticConfig.validate`).
    """
    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    T = cfg.n_topics
    start_us = np.datetime64(cfg.start.replace("Z", ""), "us").astype("int64")
    span_us = int(cfg.days * 86_400 * 1e6)

    # ---- items -------------------------------------------------------------------------------------
    n_i = cfg.n_items
    item_ids = np.arange(1, n_i + 1, dtype=np.int64)
    topic = rng.integers(0, T, size=n_i)
    quality = rng.normal(0.0, 0.3, size=n_i)
    n_cold = int(round(cfg.cold_frac * n_i))
    cold = np.zeros(n_i, dtype=bool)
    cold[rng.choice(n_i, size=n_cold, replace=False)] = True
    created = np.full(n_i, start_us - 86_400_000_000, dtype=np.int64)  # warm items: a day before the window
    late_lo = start_us + int((1 - cfg.cold_window) * span_us)
    created[cold] = rng.integers(late_lo, start_us + span_us, size=n_cold)
    words = rng.integers(0, 10, size=(n_i, 3))
    adj = rng.integers(0, len(ADJECTIVES), size=n_i)
    model_no = rng.integers(100, 1000, size=n_i)
    titles, cats = [], []
    for k in range(n_i):
        name, wl, _, _ = TOPICS[topic[k]]
        w = [wl[j] for j in words[k]]
        titles.append(f"{ADJECTIVES[adj[k]]} {w[0]} {w[1]} {w[2]} {model_no[k]}")
        cats.append([name, w[0]])
    image_uri: list[str | None] = [None] * n_i
    if cfg.image_size:
        (out / "images").mkdir(exist_ok=True)
        img_rng = np.random.default_rng([cfg.seed, 1])
        for k in range(n_i):
            (out / "images" / f"{item_ids[k]}.jpg").write_bytes(render_image(int(topic[k]), img_rng, cfg.image_size))
            image_uri[k] = f"images/{item_ids[k]}.jpg"
    _write(pa.table({"item_id": item_ids, "title": titles, "image_uri": pa.array(image_uri, pa.string()),
                     "categories": pa.array(cats, pa.list_(pa.string())),
                     "created_at": pa.array(created, schemas.TS)}, schema=schemas.ITEMS), out / "items.parquet")

    # ---- users -------------------------------------------------------------------------------------
    n_u = cfg.n_users
    user_ids = np.arange(1, n_u + 1, dtype=np.int64)
    pref = rng.dirichlet(np.full(T, 0.3), size=n_u)
    activity = rng.lognormal(0.0, 1.0, size=n_u)
    _write(pa.table({"user_id": user_ids, "age": rng.integers(16, 75, size=n_u).astype(np.int64),
                     "gender": [GENDERS[g] for g in rng.integers(0, 2, size=n_u)],
                     "occupation": [OCCUPATIONS[o] for o in rng.integers(0, len(OCCUPATIONS), size=n_u)]},
                    schema=schemas.USERS), out / "users.parquet")

    # ---- impressions (time-ordered chunks) ----------------------------------------------------------
    pop_rank = rng.permutation(n_i)                      # item k has popularity rank pop_rank[k]
    pop = (pop_rank + 1.0) ** -cfg.zipf_a
    p_all = pop / pop.sum()
    warm_idx = np.flatnonzero(~cold)
    p_warm = pop[warm_idx] / pop[warm_idx].sum() if len(warm_idx) else None
    p_user = activity / activity.sum()
    n = cfg.n_impressions
    step = span_us / n                                   # strictly increasing, unique timestamps
    clicks = orders = 0
    with pq.ParquetWriter(out / "interactions.parquet", schemas.INTERACTIONS, compression="zstd") as w:
        for lo in range(0, n, cfg.chunk_rows):
            hi = min(n, lo + cfg.chunk_rows)
            m = hi - lo
            ts = start_us + (np.arange(lo, hi) * step + rng.uniform(0, step * 0.5, size=m)).astype(np.int64)
            u = rng.choice(n_u, size=m, p=p_user)
            it = rng.choice(n_i, size=m, p=p_all)
            early = created[it] > ts                     # shown before it exists: re-draw from warm items
            if early.any():
                if p_warm is None:
                    raise ValueError("cold_frac leaves no warm item to show before the cold items exist")
                it[early] = warm_idx[rng.choice(len(warm_idx), size=int(early.sum()), p=p_warm)]
            aff = T * pref[u, topic[it]] - 1.0
            c = rng.random(m) < _sigmoid(cfg.click_bias + cfg.click_beta * aff + quality[it])
            o = c & (rng.random(m) < _sigmoid(cfg.order_bias + cfg.order_beta * aff))
            clicks += int(c.sum())
            orders += int(o.sum())
            w.write_table(pa.table({"user_id": user_ids[u], "item_id": item_ids[it],
                                    "event_timestamp": pa.array(ts, schemas.TS),
                                    "click": c.astype(np.int8), "order": o.astype(np.int8)},
                                   schema=schemas.INTERACTIONS))

    # ---- queries (search query -> clicked item, for query matching) -------------------------------
    n_q = cfg.queries_per_item * n_i
    if n_q:
        qi = np.repeat(np.arange(n_i), cfg.queries_per_item)
        qw = rng.integers(0, 10, size=(n_q, 2))
        qts = np.maximum(created[qi], start_us) + rng.integers(0, span_us // 2, size=n_q)
        qts = np.minimum(qts, start_us + span_us - 1)
        q = [f"{TOPICS[topic[i]][1][a]} {TOPICS[topic[i]][1][b]}" for i, (a, b) in zip(qi, qw)]
        _write(pa.table({"query": q, "item_id": item_ids[qi], "event_timestamp": pa.array(qts, schemas.TS)},
                        schema=schemas.QUERIES), out / "queries.parquet")
    summary = {"items": n_i, "cold_items": n_cold, "users": n_u, "impressions": n, "clicks": clicks,
               "orders": orders, "queries": n_q, "images": n_i if cfg.image_size else 0,
               "ctr": round(clicks / n, 6), "seconds": round(time.perf_counter() - t0, 3),
               "config": asdict(cfg), "out_dir": str(out)}
    (out / "synthetic.json").write_text(json.dumps({k: v for k, v in summary.items() if k not in ("seconds", "out_dir")},
                                                   indent=2, sort_keys=True))
    return summary


def digest(out_dir: Path | str) -> str:
    """SHA-256 over every file generated in ``out_dir`` (names + bytes, sorted): equal digests = identical
    datasets. Used to check determinism by seed."""
    h = hashlib.sha256()
    root = Path(out_dir)
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()
