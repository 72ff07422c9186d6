"""What the benchmark scripts share: the machine facts every result JSON records, and printing + saving it."""

import json
import os
import platform


def machine() -> dict:
    """Cores, 1-minute load average and Python version (absolute figures are read against these)."""
    return {"cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "python": platform.python_version()}


def emit(doc: dict, out: str | None) -> None:
    """Print ``doc`` as indented JSON and, when ``out`` is given, write the same text to that file."""
    text = json.dumps(doc, indent=1)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
