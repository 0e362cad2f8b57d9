#!/usr/bin/env bash
# Download, for the lent GPU machine (python 3.12, no package index), the wheels it lacks, at the versions
# requirements.lock pins, into one folder that fits the device tool's 64 MiB with the working tree.
#   bash benchmarks/device/wheels.sh [FOLDER]        (make device-wheels; BNB=1 adds bitsandbytes)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-build/device-wheels}
limit_mb=${LIMIT_MB:-58}  # 64 MiB for the whole call, the working tree (~4 MB) included
rm -rf "$out" && mkdir -p "$out"
names=$(grep -Ev '^(#|$)' benchmarks/device/wheels.txt)
if [ "${BNB:-0}" = 1 ]; then names=$(printf '%s\n' $names | grep -vx pandas; echo bitsandbytes); fi
for name in $names; do
  pin=$(grep -iE "^${name}==" requirements.lock | head -1 | cut -d' ' -f1)
  [ -n "$pin" ] || { echo "wheels.sh: $name is not pinned in requirements.lock (make lock?)" >&2; exit 1; }
  pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$out" "$pin" 2>&1 | grep -v "is ignored: it is neither" || true
  ls "$out" | grep -qi "^$(echo "$name" | tr - _)-" || { echo "wheels.sh: no cp312 wheel of $pin" >&2; exit 1; }
done
size=$(du -cm "$out"/*.whl | tail -1 | cut -f1)
echo "wheels.sh: $(ls "$out" | wc -l) wheels, ${size} MB in $out"
[ "$size" -le "$limit_mb" ] || { echo "wheels.sh: ${size} MB is over ${limit_mb} MB: the device tool carries 64 MiB a call" >&2; exit 1; }
echo "run on the GPU machine (device tool, carry [\"$out\"]): bash benchmarks/device/check.sh $out"
