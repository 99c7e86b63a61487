#!/usr/bin/env bash
# Installs the system packages the workspace needs (Debian/Ubuntu, as root or
# with sudo): OpenCV with the contrib modules (optflow: the reference peer;
# imgcodecs/imgproc/objdetect: image I/O, bicubic resize, Haar cascades),
# clang/libclang for the opencv crate's binding generator. Idempotent: does
# nothing when everything is present.
set -euo pipefail
pkgs=(libopencv-dev libopencv-contrib-dev opencv-data clang libclang-dev pkg-config)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    echo "setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
