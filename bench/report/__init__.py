"""The report of a run: docs/benchmarks.md (``markdown``), its plots (``plots``), the targets
met or missed (``targets``, with the notes of earlier runs in ``why.md``) and the summary
printed at the end (``console``)."""
