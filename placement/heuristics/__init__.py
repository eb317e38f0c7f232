"""Fast placements: best-fit decreasing (the solver's warm start), and kube-scheduler's default
profile with its preemption (the baseline)."""
