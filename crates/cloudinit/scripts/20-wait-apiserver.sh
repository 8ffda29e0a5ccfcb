#!/bin/bash
# Waits until the node's local Kubernetes API server is ready (bounded).
# Usage: 20-wait-apiserver.sh
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 0)) || usage ""
wait_apiserver
