#!/usr/bin/env bash
# Make Debian's Chromium and ChromeDriver available for the web board's browser test:
# use them if installed, install them from the system's packages if missing (as root;
# otherwise print the exact command to run).
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "Chromium missing: run  sudo apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
echo "Chromium missing: installing chromium and chromium-driver from the system's packages"
env DEBIAN_FRONTEND=noninteractive apt-get update -q
env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
