"""Batch analysis at scale: ``facefuse batch INPUT... --out DIR``.

Inputs (folders, globs, CSV or Parquet manifests with a ``path`` column) become work units
(:mod:`facefuse.batch.inputs`: a photo, or a frame range of a video); an engine runs the
face analyzer on them, a local process pool (:mod:`facefuse.batch.local`) or Ray Data actors
on one machine or a cluster (:mod:`facefuse.batch.ray_engine`), and both write the same
Parquet tables (:mod:`facefuse.batch.schema`) through the same commit protocol
(:mod:`facefuse.batch.ledger`), so that a rerun skips what is done and nothing is written
twice. :func:`facefuse.batch.job.run_batch` ties them together.

Needs pyarrow (``pip install 'facefuse[batch]'``) and, for the Ray engine, Ray Data
(``pip install 'facefuse[ray]'``); both are imported where they are used. ``docs/BATCH.md``
has the usage, the schema and the measured speed.
"""
