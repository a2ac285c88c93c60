"""An S3 object named by URI (``s3://bucket/key[?versionId=…]``): job files, dropped media, batch
manifests."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class S3ObjectRef:
    """An S3 object, optionally pinned to one version."""

    bucket: str
    key: str
    version_id: str | None = None

    @property
    def uri(self) -> str:
        base = f"s3://{self.bucket}/{self.key}"
        return f"{base}?versionId={self.version_id}" if self.version_id else base

    @property
    def file_name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @classmethod
    def parse(cls, uri: str) -> S3ObjectRef:
        """``s3://bucket/key`` (the key taken as written, like the AWS CLI) with an optional
        ``?versionId=``."""
        parts = urlsplit(uri)
        key = parts.path.removeprefix("/")
        if parts.scheme != "s3" or not parts.netloc or not key or key.endswith("/"):
            raise ValueError("must be an s3://bucket/key URI naming an object")
        query = parse_qs(parts.query, keep_blank_values=True)
        if set(query) - {"versionId"} or len(query.get("versionId", [])) > 1 or parts.fragment:
            raise ValueError("the only query an s3:// URI may carry is one versionId")
        version = query.get("versionId", [None])[0]
        return cls(bucket=parts.netloc, key=key, version_id=version or None)
