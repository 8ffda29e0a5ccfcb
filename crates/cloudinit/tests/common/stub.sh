#!/bin/bash
# Test stub for snap, microk8s, systemctl, iptables, curl, hostname and sleep: records its
# argv (NUL-separated, one file per call, in $STUB_LOG) and simulates just enough of the
# tool for the bootstrap scripts. A call whose "name args..." contains $STUB_FAIL fails.
set -euo pipefail
name=${0##*/}
# Calls in a pipeline run concurrently: number them under a lock.
exec 9>>"${STUB_LOG}/.lock"
flock 9
count=0
if [[ -e ${STUB_LOG}/.count ]]; then
  count=$(<"${STUB_LOG}/.count")
fi
count=$((count + 1))
printf '%s\n' "${count}" >"${STUB_LOG}/.count"
printf '%s\0' "${name}" "$@" >"${STUB_LOG}/$(printf '%06d' "${count}")"
flock -u 9
exec 9>&-
if [[ -n ${STUB_FAIL:-} && "${name} $*" == *"${STUB_FAIL}"* ]]; then
  echo "stub: ${name}: failing as asked" >&2
  exit 1
fi

current="${CAPI_ROOT}/var/snap/microk8s/current"

# shellcheck disable=SC2016 # MicroK8s args files hold ${SNAP_DATA} literally
install_tree() {
  mkdir -p "${current}"/{args/cni-network,args/traefik,credentials,certs,var/kubernetes/backend}
  printf -- '--kubeconfig=${SNAP_DATA}/credentials/kubelet.config\n--cert-dir=${SNAP_DATA}/certs\n' >"${current}/args/kubelet"
  printf -- '--secure-port=16443\n--etcd-servers=unix://${SNAP_DATA}/var/kubernetes/backend/kine.sock:12379\n' >"${current}/args/kube-apiserver"
  printf '# containerd environment\nulimit -n 65536 || true\n' >"${current}/args/containerd-env"
  printf -- '--bind=0.0.0.0:25000\n--keyfile=${SNAP_DATA}/certs/server.key\n--timeout 240\n' >"${current}/args/cluster-agent"
  printf -- '--traefik-config ${SNAP_DATA}/args/traefik/traefik.yaml\n--refresh-interval 30s\n' >"${current}/args/apiserver-proxy"
  cat >"${current}/args/traefik/provider.yaml" <<'YAML'
tcp:
  routers:
    Router-1:
      rule: "HostSNI(`*`)"
      service: "kube-apiserver"
      tls:
        passthrough: true
  services:
    kube-apiserver:
      loadBalancer:
        servers:
        - address: "10.0.0.11:16443"
        - address: "10.0.0.12:16443"
YAML
  cat >"${current}/args/cni-network/cni.yaml" <<'YAML'
            - name: CALICO_IPV4POOL_VXLAN
              value: "Always"
  calico_backend: "vxlan"
                - -felix-ready
                - -felix-live
YAML
  for c in client scheduler kubelet proxy controller; do
    printf 'clusters:\n- cluster:\n    server: https://127.0.0.1:16443\n' >"${current}/credentials/${c}.config"
  done
  printf '[ req ]\n[ alt_names ]\nDNS.1 = kubernetes\nDNS.2 = kubernetes.default\nIP.1 = 127.0.0.1\n#MOREIPS\n' >"${current}/certs/csr.conf.template"
  printf 'Address: 127.0.0.1:19001\nID: 3297041220608546238\nRole: 0\n' >"${current}/var/kubernetes/backend/info.yaml"
}

case ${name} in
  snap)
    case ${1:-} in
      list) [[ -e ${current}/args/kubelet ]] ;;
      install)
        # ${CAPI_ROOT}/.stub-slow-install: this install outlives the client, as when
        # `timeout` kills it; snapd finishes it for whoever watches the change.
        if [[ -e ${CAPI_ROOT}/.stub-slow-install ]]; then
          mv "${CAPI_ROOT}/.stub-slow-install" "${CAPI_ROOT}/.stub-install-running"
          exit 124
        fi
        if [[ -e ${CAPI_ROOT}/.stub-install-running ]]; then
          echo 'error: snap "microk8s" has "install-snap" change in progress' >&2
          exit 1
        fi
        install_tree
        ;;
      watch)
        if [[ -e ${CAPI_ROOT}/.stub-install-running ]]; then
          rm "${CAPI_ROOT}/.stub-install-running"
          install_tree
        else
          echo 'error: no changes of type "install" found' >&2
          exit 1
        fi
        ;;
      ack) cat >"${STUB_LOG}/ack-${count}" ;;
    esac
    ;;
  microk8s)
    case ${1:-} in
      enable) printf '%s %s %s\n' "${2:-}" "${HTTPS_PROXY:-unset}" "${no_proxy:-unset}" >>"${STUB_LOG}/enable-env" ;;
      kubectl)
        if [[ ${2:-} == get && ${3:-} == service ]]; then
          # The kubernetes Service's targetPort: 16443 until a test says it moved.
          cat "${CAPI_ROOT}/.stub-service-port" 2>/dev/null || echo 16443
        else
          echo ok
        fi
        ;;
      refresh-certs)
        # The CA must be there when MicroK8s reads it.
        [[ -e $2/ca.crt && -e $2/ca.key ]]
        cp "$2/ca.crt" "${STUB_LOG}/refreshed-ca.crt"
        ;;
      add-node) echo "microk8s join 10.0.0.10:30000/$3" ;;
      join)
        # As MicroK8s does: the kubelet arguments become a copy of the control plane node's
        # (its Cluster API block, the --node-ip that join rewrites for this node, and a flag
        # \`microk8s enable dns\` appended after the block); with .stub-old-block, a block
        # written before the end marker existed.
        {
          # shellcheck disable=SC2016 # MicroK8s args files hold ${SNAP_DATA} literally
          printf -- '--kubeconfig=${SNAP_DATA}/credentials/kubelet.config\n--cert-dir=${SNAP_DATA}/certs\n'
          printf '# Extra arguments from Cluster API (MicroK8sConfig initConfiguration.extraKubeletArgs)\n'
          printf -- '--register-with-taints=control-plane=true:NoSchedule\n--node-ip=10.0.0.99\n'
          [[ -e ${CAPI_ROOT}/.stub-old-block ]] || printf '# End of the extra arguments from Cluster API\n'
          printf -- '--cluster-dns=10.152.183.10\n'
        } >"${current}/args/kubelet"
        ;;
    esac
    ;;
  iptables)
    # No rule exists yet: -C (check) fails.
    [[ " $* " != *" -C "* ]]
    ;;
  curl) echo "type: account-key" ;;
  hostname) echo "Test-Node-1" ;;
esac
