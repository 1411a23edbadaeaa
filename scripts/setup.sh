#!/usr/bin/env bash
# Sets up a machine for Laurel: the Debian packages the tests and the demo use (Orthanc as the PACS,
# DCMTK as outside DICOM clients/servers, dicom3tools' dciodvfy as validator, Xvfb and Chromium for
# screenshots, PostgreSQL whose initdb/pg_ctl the tests run in temporary folders), then the virtual
# environment in .venv with Laurel installed in it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(orthanc dcmtk dicom3tools postgresql xvfb chromium fonts-dejavu-core)
DEBS+=(orthanc-dicomweb)  # Orthanc's DICOMweb plugin: the STOW-RS/WADO-RS peer of the DICOMweb write-back tests
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The Debian package starts a system Orthanc on 4242/8042 where systemd runs; Laurel's tests and
  # demo start their own on free ports, so the system one is left alone. Likewise the postgresql package's
  # cluster: the tests run their own servers from /usr/lib/postgresql/<version>/bin (not on PATH).
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.laurel-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Laurel and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  # LAUREL_GPU=1 installs the full TensorFlow build (NVIDIA GPU hosts); the CPU build otherwise.
  tf_extra=cpu
  if [ "${LAUREL_GPU:-0}" = "1" ]; then tf_extra=gpu; fi
  .venv/bin/python -m pip install -q -e ".[dev,${tf_extra}]"
  touch "$stamp"
fi
echo "setup: ready"
