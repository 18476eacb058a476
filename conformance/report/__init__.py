"""Drift reports: measure how far an optimizer is from torch, keep a baseline, flag moves.

Modules, one job each: :mod:`~conformance.report.cases` (the case list, per-case
seeds, shards), :mod:`~conformance.report.measure` (measure one case),
:mod:`~conformance.report.document` (a whole run; merging shards),
:mod:`~conformance.report.schema` (the JSON result, its schema, atomic writes),
:mod:`~conformance.report.drift` (baseline comparison and its thresholds),
:mod:`~conformance.report.summary` (pooled rows), :mod:`~conformance.report.markdown`,
:mod:`~conformance.report.figures`, :mod:`~conformance.report.html` and
:mod:`~conformance.report.output` (write the three reports).
"""
