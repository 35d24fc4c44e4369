"""File formats: NIfTI runs, BIDS discovery and filters, region time-series files, TSV/JSON with sidecars
(atomic writes, ``-`` for standard input/output) and provenance."""
