#!/usr/bin/env bash
# The real CSBS client for the test suite: PyPI huaweicloud-sdk-python==1.0.28 (module openstack.csbs.v1) in its
# own venv under $OPENCSBS_WORK/sdk-venv, with scripts/services/sdk/sitecustomize.py (restores the
# collections.Mapping aliases the SDK needs on Python >= 3.10). Writes $OPENCSBS_WORK/env/sdk.env with
# OPENCSBS_TEST_SDK_PYTHON (read by the sdk_run fixture in tests/conftest.py). Nothing runs: stop does nothing.
#
#   scripts/services/sdk.sh start|stop
#   OPENCSBS_SDK_BASE_PYTHON=python3.9 scripts/services/sdk.sh start   # another interpreter for the venv
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${OPENCSBS_WORK:-$ROOT/.work}
VENV=$WORK/sdk-venv
SDK_VERSION=1.0.28
case "${1:-start}" in
  start)
    mkdir -p "$WORK/env"
    if [ ! -x "$VENV/bin/python" ]; then
      "${OPENCSBS_SDK_BASE_PYTHON:-python3}" -m venv "$VENV"
    fi
    if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('huaweicloud-sdk-python') == '$SDK_VERSION'" 2>/dev/null; then
      "$VENV/bin/pip" install -q "huaweicloud-sdk-python==$SDK_VERSION"
    fi
    SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    cp scripts/services/sdk/sitecustomize.py "$SITE/sitecustomize.py"
    # Readiness: the CSBS resources import and build a request.
    "$VENV/bin/python" -c "
from openstack import connection
from openstack.csbs.v1 import resource
r = resource.ResourceBackupCapability.new(provider_id='p', check_protectable=[])
assert r._prepare_request(requires_id=False).uri == '/providers/p/resources/action'
"
    echo "export OPENCSBS_TEST_SDK_PYTHON=$VENV/bin/python" > "$WORK/env/sdk.env"
    echo "sdk venv ready: $VENV"
    ;;
  stop) ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
