"""flotilla/kube."""
