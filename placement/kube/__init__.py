"""The edge to Kubernetes: the cluster API seam, objects to snapshots, the scheduler loop, its metrics."""
