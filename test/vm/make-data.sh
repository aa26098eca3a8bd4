#!/usr/bin/env bash
# Builds the VM's test images on the host: make-data.sh OBDFS DATADIR
set -euo pipefail
obdfs=$1 data=$2
fx=/work/shared/fixtures/oracle
: >"$data/env"
