"""Fetch pinned dataset files from S3 straight into the job's folder, checking their md5.

``python -m operators.jobs.fetch inputs.json DEST``: inputs.json lists ``{"name", "url", "md5"}``.
Credentials and endpoint come from the job's environment (AWS_*), never from arguments.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlparse


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(inputs: list[dict[str, str]], destination: Path) -> list[dict[str, object]]:
    import boto3

    s3 = boto3.client("s3")
    destination.mkdir(parents=True, exist_ok=True)
    fetched = []
    for item in inputs:
        url = urlparse(item["url"])
        target = destination / item["name"]
        began = time.monotonic()
        s3.download_file(url.netloc, url.path.lstrip("/"), str(target))
        actual = md5_of(target)
        if actual != item["md5"]:
            target.unlink()
            raise SystemExit(f"{item['url']}: md5 {actual} does not match the pinned {item['md5']}")
        fetched.append({"name": item["name"], "bytes": target.stat().st_size,
                        "seconds": round(time.monotonic() - began, 3)})
    return fetched


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m operators.jobs.fetch INPUTS_JSON DEST", file=sys.stderr)
        return 2
    for item in fetch(json.loads(Path(argv[0]).read_text()), Path(argv[1])):
        print(f"fetched {item['name']}: {item['bytes']} bytes in {item['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
