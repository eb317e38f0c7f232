"""The CP-SAT solver: symmetry reduction into classes, the count model, decoding counts into pods,
and `solve`."""
