#!/bin/bash
# Control plane: moves the API server from MicroK8s' port 16443 to 6443 (the port load
# balancers and kubeconfigs of Cluster API use), keeps node ports off 30000 (the remapped
# cluster agent port), recreates the kubernetes Service with the new port, and redirects
# 16443 to 6443 with iptables, persisted by a systemd unit (no package installation).
# Usage: 50-apiserver-port.sh
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 0)) || usage ""
apiserver_args="${SNAP_ARGS}/kube-apiserver"
[[ -e ${apiserver_args} ]] || die "${apiserver_args#"${CAPI_ROOT}"} does not exist; is MicroK8s installed?"

if grep -q '^--service-node-port-range' "${apiserver_args}"; then
  sed -i -E 's/^--service-node-port-range[= ].*$/--service-node-port-range=30001-32767/' "${apiserver_args}"
else
  printf -- '--service-node-port-range=30001-32767\n' >>"${apiserver_args}"
fi
sed -i 's/\b16443\b/6443/g' "${apiserver_args}"
for config in "${SNAP_CURRENT}"/credentials/*.config; do
  if [[ -e ${config} ]]; then
    sed -i 's/\b16443\b/6443/g' "${config}"
  fi
done
run_configure_hook
restart_service daemon-kubelite
wait_apiserver
# The API server recreates the kubernetes Service with its port; it never changes the port
# of the one it made on 16443. Joining control plane nodes find it moved already and leave it
# (deleting it cuts every in-cluster client off the API server for a moment).
recreate_kubernetes_service() {
  local target
  # (retry runs this where set -e does not apply: every failure is returned explicitly.)
  target=$(timeout 60 microk8s kubectl get service kubernetes -n default --ignore-not-found \
    -o 'jsonpath={.spec.ports[0].targetPort}') || return 1
  if [[ ${target} == 16443 ]]; then
    timeout 60 microk8s kubectl delete service kubernetes -n default --ignore-not-found || return 1
  fi
}
retry 10 5 "recreating the kubernetes Service" recreate_kubernetes_service

iptables_bin=$(command -v iptables) || die "iptables is not installed"
redirect=(-p tcp --dport 16443 -j REDIRECT --to-port 6443)
# -w: wait for the xtables lock (kube-proxy and Calico hold it often; without -w iptables
# fails at once, and a failed check would read as "no rule").
add_rule() {
  local chain=$1
  shift
  if ! iptables -w 30 -t nat -C "${chain}" "$@" >/dev/null 2>&1; then
    iptables -w 30 -t nat -A "${chain}" "$@"
  fi
}
add_rule OUTPUT -o lo "${redirect[@]}"
add_rule PREROUTING "${redirect[@]}"

unit_name=capi-microk8s-apiserver-redirect.service
unit_dir="${CAPI_ROOT}/etc/systemd/system"
mkdir -p "${unit_dir}"
cat >"${unit_dir}/${unit_name}" <<UNIT
# Written by the MicroK8s Cluster API bootstrap (50-apiserver-port.sh).
[Unit]
Description=Redirect the MicroK8s API server port 16443 to 6443
# Early boot, before the network, like a firewall: no default dependencies (those would order
# it after basic.target, which comes after cloud-init and the network, and systemd would
# break the cycle by dropping one of them at every boot).
DefaultDependencies=no
Wants=network-pre.target
After=local-fs.target systemd-modules-load.service
Before=network-pre.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=-${iptables_bin} -w 30 -t nat -D OUTPUT -o lo ${redirect[*]}
ExecStart=${iptables_bin} -w 30 -t nat -A OUTPUT -o lo ${redirect[*]}
ExecStart=-${iptables_bin} -w 30 -t nat -D PREROUTING ${redirect[*]}
ExecStart=${iptables_bin} -w 30 -t nat -A PREROUTING ${redirect[*]}

[Install]
WantedBy=multi-user.target
UNIT
retry 5 5 "reloading systemd" systemctl daemon-reload
retry 5 5 "enabling ${unit_name}" systemctl enable "${unit_name}"
log "the API server listens on 6443; 16443 is redirected to it"
