"""Datasets: readers for real face-dataset layouts, the sample table, splits, the cache."""

from facefuse.data.readers import READERS, DatasetReader, ReadResult, Skipped, read_dataset
from facefuse.data.table import SampleTable

__all__ = ["READERS", "DatasetReader", "ReadResult", "SampleTable", "Skipped", "read_dataset"]
