#!/usr/bin/env bash
# Build the local control plane from the Go module proxy, once per pinned version.
#
#   e2e/controlplane/build.sh            build what is missing (warm: a few seconds)
#   e2e/controlplane/build.sh --print    print the cache directory of each binary
#
# Binaries land OUTSIDE the repo, in ${FLOTILLA_CACHE:-~/.cache/flotilla}/bin/<name>-<version>/.
# Kubernetes is built through a wrapper module that replaces every staging module (read from
# upstream's go.mod for that exact version) with its published v0.X.Y, because k8s.io/kubernetes
# itself requires them at v0.0.0 and cannot be `go install`ed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${FLOTILLA_CACHE:-$HOME/.cache/flotilla}"
bin="$cache/bin"
work="$cache/build"
logs="$cache/logs"
mkdir -p "$bin" "$work" "$logs"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# wrapper_module DIR NAME REQUIRE... : a throwaway module that requires the given module@version pairs.
wrapper_module() {
  local dir="$1" name="$2"; shift 2
  rm -rf "$dir"; mkdir -p "$dir"
  { echo "module flotilla.local/$name"; echo; echo "go 1.25"; echo; echo "require ("
    for req in "$@"; do echo "	${req%@*} ${req#*@}"; done
    echo ")"; } >"$dir/go.mod"
}

build_kubernetes() {
  local v="$KUBERNETES_VERSION" out="$bin/kubernetes-$KUBERNETES_VERSION"
  [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/kube-scheduler" && -x "$out/kubectl" ]] && return 0
  log "kubernetes $v: resolving staging modules"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  local minor="${v#v1.}"; minor="${minor%%.*}"; local patch="${v##*.}"
  local staging_v="v0.$minor.$patch"
  local dir="$work/kubernetes-$v"
  wrapper_module "$dir" kubernetes "k8s.io/kubernetes@$v"
  {
    echo; echo "replace ("
    grep -E '=> \./staging/' "$gomod" | awk -v sv="$staging_v" '{print "\t" $1 " => " $1 " " sv}'
    echo ")"
  } >>"$dir/go.mod"
  local ld="-s -w"
  for kv in "gitVersion=$v" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
    ld+=" -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
  done
  log "kubernetes $v: building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (cold: 15-30 min on 2 cores)"
  mkdir -p "$out.tmp"
  (cd "$dir" && go build -trimpath -ldflags "$ld" -o "$out.tmp/" \
     k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
     k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_etcd() {
  local v="$ETCD_VERSION" out="$bin/etcd-$ETCD_VERSION"
  [[ -x "$out/etcd" ]] && return 0
  log "etcd $v: building"
  local dir="$work/etcd-$v"
  # server/v3's go.mod replaces its siblings with ../paths; pin them to the same release instead.
  wrapper_module "$dir" etcd "go.etcd.io/etcd/server/v3@$v" "go.etcd.io/etcd/api/v3@$v" \
    "go.etcd.io/etcd/client/pkg/v3@$v" "go.etcd.io/etcd/client/v3@$v" "go.etcd.io/etcd/pkg/v3@$v"
  mkdir -p "$out.tmp"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_simple() { # build_simple NAME MODULE@VERSION PACKAGE BINARY
  local name="$1" modv="$2" pkg="$3" binary="$4" out="$bin/$1-${2#*@}"
  [[ -x "$out/$binary" ]] && return 0
  log "$name ${modv#*@}: building"
  local dir="$work/$name-${modv#*@}"
  wrapper_module "$dir" "$name" "$modv"
  mkdir -p "$out.tmp"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/$binary" "$pkg")
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_inference_sim() {
  local v="$INFERENCE_SIM_VERSION" out="$bin/llm-d-inference-sim-$INFERENCE_SIM_VERSION"
  [[ -x "$out/llm-d-inference-sim" || -f "$out.unavailable" ]] && return 0
  if ! go mod download -json "github.com/llm-d/llm-d-inference-sim@$v" >"$logs/inference-sim-probe.log" 2>&1; then
    log "llm-d-inference-sim $v: not available from the module proxy (see $logs/inference-sim-probe.log); using flotilla.enginesim"
    touch "$out.unavailable"; return 0
  fi
  build_simple llm-d-inference-sim "github.com/llm-d/llm-d-inference-sim@$v" \
    github.com/llm-d/llm-d-inference-sim/cmd/llm-d-inference-sim llm-d-inference-sim
}

if [[ "${1:-}" == "--print" ]]; then
  echo "kubernetes=$bin/kubernetes-$KUBERNETES_VERSION"
  echo "etcd=$bin/etcd-$ETCD_VERSION"
  echo "kwok=$bin/kwok-$KWOK_VERSION"
  echo "helm=$bin/helm-$HELM_VERSION"
  echo "inference_sim=$bin/llm-d-inference-sim-$INFERENCE_SIM_VERSION"
  echo "nats=$bin/nats-server-$NATS_SERVER_VERSION"
  exit 0
fi

start=$SECONDS
build_etcd
build_simple kwok "sigs.k8s.io/kwok@$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok kwok
build_simple helm "helm.sh/helm/v3@$HELM_VERSION" helm.sh/helm/v3/cmd/helm helm
build_inference_sim
# The router replicas' shared state (issue 18): the NATS server the tests start, as a cluster runs it.
build_simple nats-server "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION" github.com/nats-io/nats-server/v2 nats-server
build_kubernetes
log "control plane binaries ready in $bin ($((SECONDS - start)) s)"
