"""flotilla: a Kubernetes operator, a GPU placement solver and a load-aware router for LLM fleets.

The distribution maps three top-level folders into this package: ``operator/`` is
``flotilla.operator``, ``router/`` is ``flotilla.router`` and ``placement/`` is
``flotilla.placement``. What they share (the InferenceFleet API types, the Kubernetes client seam,
the local control plane used by tests and the demo) lives here, under ``flotilla/``.
"""

__version__ = "0.1.0"
