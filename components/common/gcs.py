"""Copying from Cloud Storage: one function for every stage that reads a gs:// folder."""

from __future__ import annotations

from pathlib import Path


def split_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ("bucket", "a/b")."""
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return bucket, name


def download_prefix(uri: str, target: Path, client=None) -> Path:
    """Copy every object under the gs:// prefix ``uri`` into ``target`` (streamed to disk, keeping the
    relative paths); raise FileNotFoundError when the bucket or the prefix holds nothing."""
    from google.api_core.exceptions import NotFound
    from google.cloud import storage

    client = client or storage.Client()
    bucket_name, name = split_uri(uri)
    prefix = name.rstrip("/") + "/" if name else ""
    found = False
    try:
        for blob in client.list_blobs(bucket_name, prefix=prefix):
            if blob.name.endswith("/"):
                continue
            dest = target / blob.name[len(prefix) :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(dest))
            found = True
    except NotFound:
        raise FileNotFoundError(f"{uri}: no such bucket {bucket_name!r}") from None
    if not found:
        raise FileNotFoundError(f"{uri}: no such object and no objects under this prefix")
    return target
