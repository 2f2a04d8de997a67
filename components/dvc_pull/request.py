"""What a pull is asked for (``PullRequest``) and what it reports (``PullResult``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType

from components.dvc_pull.manifests import Output
from components.dvc_pull.redaction import redact_url
from components.dvc_pull.sources import Timeouts


@dataclass(frozen=True)
class PullRequest:
    """The parameters of one pull, already checked (``checks.validate_inputs``).

    ``remote_config`` holds the non-secret remote settings with relative local paths made
    absolute; it is read-only, as is the whole request.
    """

    repo_url: str
    rev: str
    paths: tuple[str, ...]
    output_dir: Path
    remote: str = ""
    remote_config: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    jobs: int = 4
    cache_dir: str = ""  # a DVC cache that outlives the pull (e.g. on a PVC); empty for a throwaway one
    timeouts: Timeouts = Timeouts()

    def result(
        self,
        commit: str,
        remote: str,
        outputs: Sequence[Output],
        file_count: int,
        total_bytes: int,
        fetched_objects: int = -1,
        cached_objects: int = -1,
    ) -> PullResult:
        """The result of pulling ``outputs`` (the output holding each path, in the order of ``paths``)."""
        return PullResult(
            repo_url=redact_url(self.repo_url),
            revision=self.rev,
            commit=commit,
            remote=remote,
            paths=list(self.paths),
            md5={path: output.oid for path, output in zip(self.paths, outputs, strict=True)},
            file_count=file_count,
            total_bytes=total_bytes,
            fetched_objects=fetched_objects,
            cached_objects=cached_objects,
        )


@dataclass
class PullResult:
    repo_url: str
    revision: str
    commit: str
    remote: str
    paths: list[str]
    md5: dict[str, str]  # DVC hash of each path ("<md5>.dir" for directories)
    file_count: int
    total_bytes: int
    fetched_objects: int = -1  # downloaded by the fast path (-1: DVC's transfer was used)
    cached_objects: int = -1  # already in the DVC cache, not fetched again
    extra: dict = field(default_factory=dict)

    def metadata(self) -> dict:
        """Flat, JSON-friendly artifact metadata."""
        payload = asdict(self)
        payload.pop("extra")
        return payload
