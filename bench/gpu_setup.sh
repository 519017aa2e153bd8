# Sourced at the start of a command on a GPU machine without a package index, in the project's root there:
# `source bench/gpu_setup.sh` (after ../shared/gpu/prepare.sh filled .gpu/ on a machine with one; name .gpu
# in the device call's carry). It installs the carried wheels and Ray (.gpu/setup-on-device.sh), then gives
# Ray's two programs back the executable bit that prepare.sh's unpacking (Python's zipfile) drops: without
# it a local Ray cannot start ("Permission denied: .../gcs_server", seen on an H200).
source .gpu/setup-on-device.sh
chmod a+x /tmp/site/ray/core/src/ray/gcs/gcs_server /tmp/site/ray/core/src/ray/raylet/raylet
