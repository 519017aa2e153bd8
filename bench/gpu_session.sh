# One device call's worth of GPU figures, most wanted first, for a session lent a GPU machine with no
# package index (../shared/gpu/README.md): prepare .gpu/ here with `bash ../shared/gpu/prepare.sh`, then
# call the device tool with `bash bench/gpu_session.sh`, carry [".gpu"], timeout_s 560. Everything lands
# under $OUT (one tarball, all.tgz, since the tool brings back only a few files); each step has its own
# time limit, so a slow one costs its own figures only.
#
# 1. the main job with stacks and graphs, with stacks alone (eager: no capture in the first epoch), with
#    graphs but no worker importing the trial code ahead, and the process start rows (gpu_report --only ...:
#    issue 12's last target, <= 25 s);
# 2. the tests marked gpu (captured steps, bf16, no torch._dynamo import, CUDA left alone by the preload;
#    modules whose optional packages the machine lacks fail to collect and are left out);
# 3. the whole GPU report, in the time left.
set -u
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu-session}"
mkdir -p "$out"
source bench/gpu_setup.sh > "$out/setup.log" 2>&1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, ray, optuna; print('torch', torch.__version__, 'ray', ray.__version__, 'optuna', optuna.__version__)"
  nproc
} > "$out/machine.txt" 2>&1
timeout 250 python3 bench/gpu_report.py --only main:graphs,main:phase,main:graphs-noahead,start --deadline-s 240 \
  --out "$out/gpu_main.md" > "$out/gpu_main.log" 2>&1
echo "gpu_main exit $?" >> "$out/machine.txt"
timeout 120 python3 -m pytest -q -o addopts="" -p no:cacheprovider --continue-on-collection-errors -m gpu tests > "$out/gpu_tests.log" 2>&1
echo "gpu tests exit $?" >> "$out/machine.txt"
timeout 170 python3 bench/gpu_report.py --skip main,start --deadline-s 160 --out "$out/gpu_report.md" \
  > "$out/gpu_report.log" 2>&1
echo "gpu_report exit $?" >> "$out/machine.txt"
tar czf "$out/all.tgz" -C "$out" --exclude all.tgz .
