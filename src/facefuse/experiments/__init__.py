"""Experiments run by ``facefuse experiment CONFIG``: one module per protocol, registered in
:data:`EXPERIMENTS` (:mod:`facefuse.experiments.registry`) under the name a config's ``kind``
field gives."""

from facefuse.experiments import dmm_cnn, li_zhu, mtl_compare  # noqa: F401  (they register)
from facefuse.experiments.registry import EXPERIMENTS, Experiment, experiment_kind

__all__ = ["EXPERIMENTS", "Experiment", "experiment_kind"]
