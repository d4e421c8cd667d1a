#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kubectl, helm and promtool from the Go module proxy into a
# cache outside the checkout, one directory per pinned version, and this project's own
# envoy-driver into one directory per hash of its sources. Builds only what is missing;
# prints, on its last line, a directory that links to all of them (the tests' bin dir).
set -euo pipefail

tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/versions.env
source "${tools_dir}/versions.env"

cache="${BUDGET_GUARD_CACHE:-${HOME}/.cache/llm-budget-guard}"
bin_dir="${cache}/bin/k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_prometheus-${PROMETHEUS_VERSION}"
mkdir -p "${bin_dir}"

# envoy-driver is built from tools/envoy-driver/ in this checkout: a change to its sources
# (tests aside) or its dependencies gives a new hash, so a new build, without rebuilding
# the pinned tools above.
driver_src="${tools_dir}/envoy-driver"
driver_hash="$(cd "${driver_src}" &&
  find . -maxdepth 1 \( -name '*.go' ! -name '*_test.go' -o -name go.mod -o -name go.sum \) -print0 |
  sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
driver_dir="${cache}/bin/envoy-driver-${driver_hash}"
test_bin_dir="${bin_dir}_envoy-driver-${driver_hash}"
mkdir -p "${driver_dir}" "${test_bin_dir}"

# Two checkouts may run 'make test' at once on one cache: one builds, the other waits.
exec 9>"${cache}/bin/.build.lock"
flock 9

if ! command -v go >/dev/null 2>&1; then
  echo "error: 'go' is not on PATH; the Kubernetes test binaries are built from source." >&2
  echo "       Install Go >= 1.26 (https://go.dev/doc/install) and run 'make test' again." >&2
  exit 1
fi

export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"

log() { printf '[build-test-binaries] %s\n' "$*" >&2; }

build() { # build <tools module dir> <output name> <package> <ldflags> [<build tags>] [<output dir>]
  local module="$1" name="$2" package="$3" ldflags="$4" tags="${5:-}" out="${6:-${bin_dir}}"
  if [[ -x "${out}/${name}" ]]; then return 0; fi
  log "building ${name} (${package}); this takes minutes the first time"
  local started=${SECONDS}
  (cd "${tools_dir}/${module}" && go build -trimpath -tags "${tags}" -ldflags "${ldflags}" -o "${out}/${name}.partial" "${package}")
  mv "${out}/${name}.partial" "${out}/${name}"
  log "built ${name} in $((SECONDS - started))s"
}

kube_minor="${KUBE_VERSION#v1.}"; kube_minor="${kube_minor%%.*}"
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${kube_minor}"
  kube_ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
done

build etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "${kube_ldflags}"
build kube kubectl k8s.io/kubernetes/cmd/kubectl "${kube_ldflags}"
build helm helm helm.sh/helm/v3/cmd/helm "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
# remove_all_sd leaves out Prometheus' service discovery plugins (cloud SDKs): promtool's
# rule checks and rule unit tests do not use them, and the build is minutes shorter.
build promtool promtool github.com/prometheus/prometheus/cmd/promtool \
  "-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}" remove_all_sd
build envoy-driver envoy-driver . "-s -w -X main.version=${driver_hash}" "" "${driver_dir}"

for binary in etcd kube-apiserver kubectl helm promtool; do
  ln -sfn "${bin_dir}/${binary}" "${test_bin_dir}/${binary}"
done
ln -sfn "${driver_dir}/envoy-driver" "${test_bin_dir}/envoy-driver"

echo "${test_bin_dir}"
