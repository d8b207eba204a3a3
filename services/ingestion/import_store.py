"""Imports on disk: one content-addressed JSON file per import under <runs root>/imports/<import_id>.json.

Only what run_import produced is written (rows already PII-masked); writes are atomic (a temporary
file renamed into place), so a reader never sees half a file and a failed import leaves nothing.
The same import twice is one file (the id is the content address). `resolve` merges the imports an
idea references, in the order given, into one GroundingData for Idea.grounding.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Sequence

from google.protobuf import json_format

from smvm.errors import InvalidArgument
from smvm.v1 import grounding_pb2

from services.ingestion.importer import ImportResult

IMPORT_ID = re.compile(r"[0-9a-f]{64}")
MAX_REFS = 20
# Rows an idea may carry in Idea.grounding (it travels to every stage and into idea.input.json):
# 200,000 survey answers are about 12 MB of protobuf, well inside the mesh's 64 MiB message limit.
MAX_RESOLVED_ROWS = 200_000


class ImportStore:
    def __init__(self, runs_dir: Path | str):
        self.root = Path(runs_dir) / "imports"

    def path(self, import_id: str) -> Path:
        return self.root / f"{import_id}.json"

    def save(self, result: ImportResult) -> bool:
        """Store the import; True when it already existed (same content address, same file)."""
        target = self.path(result.import_id)
        if target.exists():
            return True
        self.root.mkdir(parents=True, exist_ok=True)
        text = json_format.MessageToJson(result.grounding, preserving_proto_field_name=True, indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".import-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return False

    def load(self, import_id: str) -> grounding_pb2.GroundingData | None:
        if not IMPORT_ID.fullmatch(import_id):
            return None
        try:
            text = self.path(import_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return json_format.Parse(text, grounding_pb2.GroundingData())

    def resolve(self, refs: Sequence[str], field: str) -> grounding_pb2.GroundingData:
        """The referenced imports merged; InvalidArgument naming `field[i]` for a malformed or unknown id."""
        if len(refs) > MAX_REFS:
            raise InvalidArgument(field, f"must reference at most {MAX_REFS} imports", reason="TOO_MANY")
        merged = grounding_pb2.GroundingData(confidence_factor=1.0)
        seen: set[str] = set()
        for i, ref in enumerate(refs):
            ref = ref.strip().lower()
            if not IMPORT_ID.fullmatch(ref):
                raise InvalidArgument(f"{field}[{i}]", "must be an import id (64 hexadecimal characters)",
                                      reason="BAD_IMPORT_ID")
            if ref in seen:
                continue
            data = self.load(ref)
            if data is None:
                raise InvalidArgument(f"{field}[{i}]", "names no stored import (import the file first)",
                                      reason="UNKNOWN_IMPORT")
            seen.add(ref)
            rows = sum(len(x) for x in (merged.van_westendorp, merged.gabor_granger, merged.competitors,
                                        merged.market_sizes, data.van_westendorp, data.gabor_granger,
                                        data.competitors, data.market_sizes))
            if rows > MAX_RESOLVED_ROWS:
                raise InvalidArgument(f"{field}[{i}]", f"the referenced imports together hold more than "
                                      f"{MAX_RESOLVED_ROWS} rows", reason="TOO_MANY_ROWS")
            merged.van_westendorp.extend(data.van_westendorp)
            merged.gabor_granger.extend(data.gabor_granger)
            merged.competitors.extend(data.competitors)
            merged.market_sizes.extend(data.market_sizes)
            merged.quality.extend(data.quality)
            merged.import_ids.append(ref)
            merged.quality_warning = merged.quality_warning or data.quality_warning
            merged.confidence_factor = min(merged.confidence_factor, data.confidence_factor)
        return merged
