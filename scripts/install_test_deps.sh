#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian machine with Python 3.11:
#  - the project's requirements (CPU JAX stack) and the test-only ones (PyTorch CPU, used only to
#    build reference networks whose weights the importer must reproduce; the library never
#    imports torch);
#  - Debian's headless Chromium and ChromeDriver for the web page's end-to-end test.
# Run it inside the virtual environment (or Python) the tests will use.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -r requirements.txt -r requirements-test.txt
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
