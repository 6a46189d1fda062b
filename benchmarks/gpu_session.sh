#!/usr/bin/env bash
# One prepared command for a lent GPU host (no network): install what it lacks, run the GPU
# protocol, leave everything under $OUT. Not yet run on a device.
#
# Here, in the project root, before the session:
#   bash ../shared/tools/offline_wheels.sh          # .offline/: mujoco, dm_control, distrax, ...
#   pip wheel --no-deps -q -w .offline .            # this library (its agents are entry points)
#   git rev-parse HEAD > .offline/COMMIT             # the host gets no .git
#   EGL: the .gl/ packages as /work/.library/device/README.md says
# Then: run(command="bash benchmarks/gpu_session.sh 9", carry=[".offline", ".gl"], timeout_s=600)
set -uo pipefail
minutes="${1:-9}"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .offline/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site MUJOCO_GL=egl PYTHONUNBUFFERED=1
cd /tmp  # the installed package, not the checkout
commit="$(cat "$OLDPWD/.offline/COMMIT" 2>/dev/null || echo unknown)"
python3 -m benchmarks.gpu_protocol --minutes "$minutes" --commit "$commit" --out "$OUT/gpu_protocol" 2>&1 \
  | tee "$OUT/protocol.log"
