"""The Dagster UI's server, as a user runs it: `dagster-webserver` on loopback, its GraphQL API for the asset
graph (keys, dependencies, description/owners/group on every asset), and a materialization of the ingest
assets launched through GraphQL on the real MovieLens-100K subset, polled until the run succeeds.

The server runs through ppm_platform.testing.dagster_ui (own session; SIGINT, then SIGKILL of what is left:
../shared/notes/stack.md §6).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ppm_platform.testing.dagster_ui import LOCATION, graphql, stop_session, webserver

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MAX_ITEMS = 250
INGEST = ("items", "users", "interactions", "queries")
#: the asset graph of DESIGN.md §3: these assets with at least these parents (stages added later, e.g. the
#: fine-tuned encoders feeding item_multimodal, may add assets and edges)
EXPECTED_PARENTS = {
    "item_multimodal": {"items"},
    "behavior_sequences": {"interactions"},
    "ppm_model": {"item_multimodal", "behavior_sequences", "interactions"},
    "ppm_item_cache": {"ppm_model", "item_multimodal"},
    "ppm_user_cache": {"ppm_model", "behavior_sequences", "ppm_item_cache"},
    "training_set": {"feast_definitions", "interactions"},
    "online_store": {"feast_definitions"},
    "base_model": {"training_set"},
    "urm_model": {"training_set", "ppm_model"},
    "urm_onnx": {"urm_model"},
    "base_onnx": {"base_model"},
    "ranking_demo": {"urm_onnx", "online_store"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from ppm_platform.cli.orchestration import write_dagster_yaml
    from ppm_platform.config import Settings

    tmp = tmp_path_factory.mktemp("webserver")
    env = dict(os.environ, PPM_MAX_ITEMS=str(MAX_ITEMS), PPM_ARTIFACTS_DIR=str(tmp / "artifacts"),
               DAGSTER_HOME=str(tmp / "dagster_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    env.pop("PPM_CONFIG", None)
    # the dagster.yaml of `make ui`, plus: the webserver alone has no daemon to dequeue runs (Dagster's default
    # QueuedRunCoordinator), so launch them directly, as `dagster dev` + daemon would
    write_dagster_yaml(tmp / "dagster_home", extra={"run_coordinator": {
        "module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"}})
    settings = Settings.from_env(env)
    try:
        settings.require_dataset()
    except FileNotFoundError as e:
        pytest.fail(f"integration tests need the real dataset: {e}")
    with webserver(env, tmp / "webserver.log") as port:
        yield port, settings, tmp


ASSET_NODES = """{ assetNodes { assetKey { path } groupName description
  owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
  dependencyKeys { path } } }"""


def test_asset_graph_over_graphql(server):
    port, _, _ = server
    nodes = {"/".join(n["assetKey"]["path"]): n for n in graphql(port, ASSET_NODES)["assetNodes"]}
    assert set(EXPECTED_PARENTS) <= set(nodes), set(EXPECTED_PARENTS) - set(nodes)
    for key, parents in EXPECTED_PARENTS.items():
        assert parents <= {"/".join(d["path"]) for d in nodes[key]["dependencyKeys"]}, key
    # every asset (including ones added later) is documented, owned and grouped by pipeline stage
    for key, n in nodes.items():
        assert n["description"] and len(n["description"]) > 20, key
        assert n["owners"], key
        assert n["groupName"] and n["groupName"] != "default", key
    assert {nodes[k]["groupName"] for k in INGEST} == {"ingest"}
    assert all(not nodes[k]["dependencyKeys"] for k in INGEST)  # the roots of the graph
    assert nodes["urm_model"]["groupName"] == "training" and nodes["ppm_user_cache"]["groupName"] == "ppm"


LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message stack } ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""
MATS = """query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
  assetMaterializations(limit: 1) { runId metadataEntries { label __typename
    ... on IntMetadataEntry { intValue } ... on JsonMetadataEntry { jsonString } } } } } }"""


def test_launch_ingest_through_graphql_and_wait_for_success(server):
    port, settings, tmp = server
    params = {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                           "jobName": "__ASSET_JOB", "assetSelection": [{"path": [k]} for k in INGEST]},
              "mode": "default", "runConfigData": "{}"}
    launched = graphql(port, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline, status = time.monotonic() + 420, None
    while time.monotonic() < deadline:
        status = graphql(port, RUN, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        assert not (status == "QUEUED" and time.monotonic() > deadline - 360), "run still QUEUED after 60 s"
        time.sleep(2)
    assert status == "SUCCESS", f"run {run_id} ended {status}: {(tmp / 'webserver.log').read_text()[-4000:]}"

    md = {}
    for key in INGEST:
        mats = graphql(port, MATS, {"key": {"path": [key]}})["assetOrError"]["assetMaterializations"]
        assert mats and mats[0]["runId"] == run_id, key
        md[key] = {e["label"]: e.get("intValue", e.get("jsonString")) for e in mats[0]["metadataEntries"]}
    # row accounting against the real files: items 1..250 of u.item, their ratings in u.data
    assert md["items"]["rows_in"] == MAX_ITEMS
    assert md["items"]["rows_out"] + md["items"]["rows_quarantined"] == MAX_ITEMS
    raw = pd.read_csv(settings.data_dir / "u.data", sep="\t", header=None)
    inter = md["interactions"]
    assert inter["rows_in"] == int((raw[1] <= MAX_ITEMS).sum())
    assert inter["rows_in"] == inter["rows_out"] + inter["rows_quarantined"]
    # the run wrote the canonical tables where the settings say
    assert len(pd.read_parquet(settings.tables_dir / "interactions.parquet")) == inter["rows_out"]


BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack }
  ... on InvalidSubsetError { message } ... on UnauthorizedError { message } } }"""
BACKFILL_STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status numPartitions runs(limit: 10) { runId status } } } }"""
BACKFILL_DAYS = ["1997-09-20", "1997-09-21", "1997-09-22"]


def test_backfill_of_a_date_range_from_the_ui(server):
    """What the UI's "Materialize -> partition range -> Launch backfill" sends (`launchPartitionBackfill`),
    executed by a real `dagster-daemon` (backfills are the daemon's job, as under `dagster dev`): one run
    (single-run backfill policy) writes each day's interactions partition. Needs the ingest test's tables."""
    port, settings, tmp = server
    env = dict(os.environ, PPM_MAX_ITEMS=str(MAX_ITEMS), PPM_ARTIFACTS_DIR=str(settings.artifacts_dir),
               DAGSTER_HOME=str(tmp / "dagster_home"), SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    env.pop("PPM_CONFIG", None)
    log = open(tmp / "daemon.log", "w")
    daemon = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-m", LOCATION], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        params = {"assetSelection": [{"path": ["interactions_daily"]}], "partitionNames": BACKFILL_DAYS,
                  "fromFailure": False, "title": "test backfill"}
        launched = graphql(port, BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        deadline, bf = time.monotonic() + 300, {}
        while time.monotonic() < deadline:
            assert daemon.poll() is None, f"dagster-daemon exited: {(tmp / 'daemon.log').read_text()[-3000:]}"
            bf = graphql(port, BACKFILL_STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"]
            if bf.get("status") in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
                break
            time.sleep(3)
        assert bf.get("status") in ("COMPLETED", "COMPLETED_SUCCESS"), (bf, (tmp / "daemon.log").read_text()[-4000:])
    finally:
        stop_session(daemon)
        log.close()
    assert bf["numPartitions"] == 3 and len(bf["runs"]) == 1 and bf["runs"][0]["status"] == "SUCCESS"
    inter = pd.read_parquet(settings.tables_dir / "interactions.parquet")
    for day in BACKFILL_DAYS:
        part = pd.read_parquet(settings.tables_dir / "interactions_daily" / f"{day}.parquet")
        assert len(part) == int((inter["event_timestamp"].dt.strftime("%Y-%m-%d") == day).sum()), day
