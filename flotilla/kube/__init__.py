"""The Kubernetes client seam shared by the components: how a process connects to the API server.

Shared code (it may not import a component; see .importlinter): `config.load_configuration` is the
one rule for finding credentials that the operator, the placement loop and the router all follow.
"""
