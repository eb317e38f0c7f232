"""The solver's input and output: an immutable snapshot of the cluster, and the plan."""
