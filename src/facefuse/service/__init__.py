"""``facefuse serve``: the analyzer and the face galleries as a REST service (FastAPI and
uvicorn, the ``serve`` extra: ``pip install 'facefuse[serve]'``).

The layers: :mod:`~facefuse.service.batcher` (the one model thread that every request feeds,
micro-batching their images), :mod:`~facefuse.service.galleries` (the galleries under one
folder, each opened once), :mod:`~facefuse.service.metrics` (Prometheus text) and
:mod:`~facefuse.service.app` (the FastAPI application). FastAPI is imported by ``app``
only, when a service is built. ``docs/SERVICE.md`` has the endpoints and the design.
"""
