"""The local Kubernetes control plane for tests and the demo.

Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built by
e2e/controlplane/build.sh), with KWOK playing the kubelets of fake GPU nodes, and engine processes
bound to the pods' own loopback IPs. Import from the modules (nothing is re-exported here, so
that `flotilla --help` does not pay for httpx, pydantic and cryptography):

- `controlplane`: `LocalCluster`, `ClusterConfig` (start/stop a cluster, add nodes, API clients)
- `nodes`: `GpuNodeSpec`, `KWOK_TOLERATION`, chaos labels (node NotReady, pod failure)
- `engines`: `EngineLauncher`, `EngineSimCommand`; `podwatch`: `PodEngineWatcher`
- `kubectl`: `Kubectl`; `binaries`: `ensure_binaries`, `BinariesMissing`
"""
