"""A model's life after training, one module per step, each behind a ``facefuse model``
command: :mod:`~facefuse.lifecycle.calibrate` (fit the age map into a checkpoint),
:mod:`~facefuse.lifecycle.average` (a weight mean of runs), :mod:`~facefuse.lifecycle.ship`
(the ONNX graph and metadata the package runs) and :mod:`~facefuse.lifecycle.card` (the
model card fields of a model's metadata). Every file they write goes through the package's
one atomic writer (:func:`facefuse.files.atomic_path`).

Calibrating, averaging and shipping need the training extra (torch); the card needs only
the metadata. Nothing here is imported by inference or training code.
"""
