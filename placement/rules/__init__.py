"""Kubernetes' rules and the cluster state they are checked against: hard filters, capacity views,
a plan's quality, why a pod stays pending."""
