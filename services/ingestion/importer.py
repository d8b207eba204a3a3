"""One grounding import: bytes of a CSV / JSON / JSONL file -> its rows and data-quality report, all or nothing.

`run_import` is pure (no disk, no clock): the same kind, format and bytes always give the same
import id, rows and report. Steps:
1. format from the request or the file name; records read by tabular.py (an unreadable file is
   refused whole);
2. every required column must appear in the file (else refused whole: it is the wrong file);
3. each row parsed by the kind's adapter: a refused row is listed with its column and rule, personal
   data is masked (respondent ids pseudonymised) before anything leaves this function;
4. duplicates dropped (the first kept), outliers counted, coverage, warnings, quality_warning and the
   quality score (quality.py states every rule);
5. more than quality.MAX_REJECTED_SHARE of the rows refused -> the file is refused whole.
Storage is import_store.py's job; a refused file never reaches it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from smvm.errors import InvalidArgument
from smvm.v1 import grounding_pb2

from services.ingestion import pii, quality, tabular, validate
from services.ingestion.adapters import adapter_for
from services.ingestion.adapters.base import Cells, RowError, canonical_columns, missing_columns

SOURCE_NAME_MAX = 255
# Rejected rows listed in the report; beyond this only the count grows (a 100k-row file of errors
# should not make a 100k-entry report).
MAX_LISTED_REJECTIONS = 200


@dataclass(frozen=True)
class ImportResult:
    import_id: str
    # This import's rows, with `quality` holding its one report and `import_ids` its id.
    grounding: grounding_pb2.GroundingData

    @property
    def report(self) -> grounding_pb2.DataQualityReport:
        return self.grounding.quality[0]


def import_id_of(kind: str, fmt: str, content: bytes) -> str:
    """Content address of an import: SHA-256 over kind, format and bytes (the same file as another kind differs)."""
    return hashlib.sha256(kind.encode() + b"\0" + fmt.encode() + b"\0" + content).hexdigest()


def run_import(kind: str, fmt: str, content: bytes, source_name: str = "") -> ImportResult:
    adapter = adapter_for(kind)
    kind = adapter.kind
    name = validate.clean_line(os.path.basename(source_name.replace("\\", "/")))
    if len(name) > SOURCE_NAME_MAX:
        raise InvalidArgument("source_name", f"must be at most {SOURCE_NAME_MAX} characters", reason="TOO_LONG")
    fmt = tabular.format_of(fmt, name)
    records = [(row, canonical_columns(adapter, rec)) for row, rec in tabular.read_records(content, fmt)]
    missing = missing_columns(adapter, (rec for _, rec in records))
    if missing:
        raise InvalidArgument(f"content.{missing[0]}",
                              f"required column(s) {', '.join(missing)} missing from the file (kind {kind})",
                              reason="MISSING_COLUMN")
    import_id = import_id_of(kind, fmt, content)
    report = grounding_pb2.DataQualityReport(
        import_id=import_id, kind=kind, format=fmt, rows_read=len(records),
        outlier_rule=quality.OUTLIER_RULE, sha256=hashlib.sha256(content).hexdigest(),
        source_name=pii.mask(name).text,
    )
    items, present, seen = [], [], set()
    rejected = 0
    for row, values in records:
        cells = Cells(values, row)
        try:
            item = adapter.parse(cells)
        except RowError as err:
            rejected += 1
            if len(report.rejected) < MAX_LISTED_REJECTIONS:
                report.rejected.add(row=row, field=err.field, reason=err.reason)
            continue
        report.pii_masked += 1 if cells.pii_masked else 0
        key = adapter.duplicate_key(item)
        if key is not None and key in seen:
            report.duplicates += 1
            continue
        if key is not None:
            seen.add(key)
        items.append(item)
        present.append(cells.present)
    if rejected > quality.MAX_REJECTED_SHARE * len(records):
        first = report.rejected[0]
        raise InvalidArgument(
            "content",
            f"{rejected} of {len(records)} rows rejected (more than {quality.MAX_REJECTED_SHARE:.0%}); "
            f"nothing was imported. First: row {first.row}, {first.field}: {first.reason}",
            reason="TOO_MANY_REJECTED_ROWS",
        )
    columns = adapter.expected
    report.rows_accepted = len(items)
    report.outliers = len(quality.outlier_rows([adapter.outlier_values(i) for i in items]))
    report.coverage = round(quality.coverage(present, columns), 6)
    if rejected > len(report.rejected):
        report.warnings.append(f"rejected:truncated: {rejected} rows rejected, the first {len(report.rejected)} listed")
    report.warnings.extend(adapter.file_warnings(items))
    findings = quality.quality_findings(
        rows_read=len(records), accepted=len(items), rejected=rejected, duplicates=report.duplicates,
        outliers=report.outliers, coverage_share=report.coverage, min_rows=adapter.min_rows,
    )
    report.warnings.extend(findings)
    report.quality_warning = bool(findings)
    report.quality_score = quality.quality_score(
        rows_read=len(records), accepted=len(items), outliers=report.outliers, coverage_share=report.coverage)
    grounding = grounding_pb2.GroundingData(import_ids=[import_id])
    adapter.attach(items, grounding)
    # Rows without a respondent id are numbered per file; the import id keeps them apart across files.
    for answer in (*grounding.van_westendorp, *grounding.gabor_granger):
        if answer.respondent_id.startswith("row-"):
            answer.respondent_id = f"{import_id[:12]}:{answer.respondent_id}"
    for c in grounding.competitors:
        c.import_id = import_id
    for m in grounding.market_sizes:
        m.import_id = import_id
    grounding.quality.append(report)
    grounding.quality_warning = report.quality_warning
    grounding.confidence_factor = quality.confidence_factor(findings, report.quality_score)
    return ImportResult(import_id, grounding)
