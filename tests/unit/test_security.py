"""Security basics (issue #5): artifacts are loaded only through safe formats, and no secret is committed.

Path traversal from catalog fields is covered by tests/unit/test_bad_input_catalogue.py (image_* cases).
Request-size bounds of the HTTP service belong to the serving issue (#7).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("ppm_platform", "dagster_project", "feature_repo", "benchmarks")


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [REPO / p for p in out.splitlines() if (REPO / p).is_file()]


def unsafe_loads(text: str) -> list[str]:
    """Lines that deserialize with pickle: ``torch.load(`` without ``weights_only=True``, ``pickle.load(s)``,
    ``joblib.load``, ``np.load(..., allow_pickle=True)``, ``pd.read_pickle``."""
    bad = []
    for m in re.finditer(r"torch\.load\(", text):
        depth, end = 0, m.end() - 1
        for end in range(m.end() - 1, len(text)):  # the call up to its matching ")"
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        call = text[m.start(): end + 1]
        if "weights_only=True" not in call:
            bad.append(call)
    bad += re.findall(r"(?:pickle|cloudpickle|dill)\.loads?\(|joblib\.load\(|read_pickle\(|allow_pickle\s*=\s*True", text)
    return bad


def test_scanner_catches_unsafe_loads():
    assert unsafe_loads('sd = torch.load(p, map_location="cpu")')
    assert unsafe_loads("x = pickle.loads(b)") and unsafe_loads("np.load(f, allow_pickle=True)")
    assert not unsafe_loads('sd = torch.load(str(path), map_location="cpu", weights_only=True)')


def test_no_unsafe_deserialization_in_the_code_base():
    files = [p for p in _tracked(*CODE_DIRS) if p.suffix == ".py"]
    assert len(files) > 20
    found = {str(p.relative_to(REPO)): unsafe_loads(p.read_text()) for p in files}
    assert {k: v for k, v in found.items() if v} == {}


SECRET_PATTERNS = {
    "aws access key": r"AKIA[0-9A-Z]{16}",
    "github token": r"gh[pousr]_[A-Za-z0-9]{36,}",
    "slack token": r"xox[baprs]-[A-Za-z0-9-]{10,}",
    "private key": r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----",
    "openai/hf key": r"\b(?:sk-[A-Za-z0-9]{32,}|hf_[A-Za-z0-9]{30,})\b",
    "password assignment": r"(?i)\b(?:password|passwd|secret|api_key|token)\s*[:=]\s*['\"][^'\"\s]{8,}['\"]",
}


def find_secrets(text: str) -> list[str]:
    return [name for name, pat in SECRET_PATTERNS.items() if re.search(pat, text)]


def test_secret_scanner_catches_examples():
    assert find_secrets("aws = 'AKIA" + "ABCDEFGHIJKLMNOP'") == ["aws access key"]
    assert find_secrets('API_KEY = "' + "s3cr3tvalue123" + '"') == ["password assignment"]
    assert find_secrets("-----BEGIN " + "PRIVATE KEY-----") == ["private key"]
    assert find_secrets("redis: str = '127.0.0.1:6379'") == []


def test_no_secrets_in_tracked_files():
    hits = {}
    for p in _tracked():
        if p.stat().st_size > 2_000_000:
            continue
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        if found := find_secrets(text):
            hits[str(p.relative_to(REPO))] = found
    assert hits == {}
