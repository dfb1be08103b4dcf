#!/usr/bin/env bash
# The prepared GPU run (docs/speed.md, "A prepared GPU run"): one command on a GPU machine, about 5 minutes.
#
#   bash benchmarks/device_run.sh
#
# 1. Where Keras is missing, installs the wheels carried in .whl/ (Keras, namex, optree, ruamel.yaml: what a
#    machine with PyTorch and JAX but no Keras lacks), downloaded beforehand for Python 3.12 as docs/speed.md
#    shows, into /tmp/site.
# 2. Runs python -m benchmarks.device_unit once per backend (DEVICE_RUN_BACKENDS, default "jax torch"): one
#    fold of a finetune unit of 780 phantom images at 224 px, for VGG16 and ResNet50 at ft_fraction 0.15 and 1,
#    in bf16 and float32, each beside the card's measured matrix rate.  Each backend gets DEVICE_RUN_BACKEND_S seconds
#    (default 140); what it measured before then is kept.
# 3. Writes device_unit_<backend>.md and .json into $OUT (default benchmarks/results), with the log.
#
# DEVICE_RUN_IMAGES, DEVICE_RUN_IMAGE_SIZE, DEVICE_RUN_EPOCHS, DEVICE_RUN_BATCH_SIZE and DEVICE_RUN_MODELS shrink
# it: a test runs it on the CPU with tiny sizes and one network.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
python="${PYTHON:-python3}"
# Only where Keras is missing (a machine with PyTorch and JAX but no Keras): elsewhere the wheels may not fit.
if ! "$python" -c "import keras" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv \
  | tee "$out/device_run.log"
status=0
for backend in ${DEVICE_RUN_BACKENDS:-jax torch}; do
  echo "== $backend" | tee -a "$out/device_run.log"
  KERAS_BACKEND="$backend" timeout "${DEVICE_RUN_BACKEND_S:-140}" "$python" -m benchmarks.device_unit \
    --images "${DEVICE_RUN_IMAGES:-780}" --image-sizes "${DEVICE_RUN_IMAGE_SIZE:-224}" \
    --epochs "${DEVICE_RUN_EPOCHS:-3}" --batch-size "${DEVICE_RUN_BATCH_SIZE:-32}" --results-dir "$out" \
    --models ${DEVICE_RUN_MODELS:-ResNet50 VGG16} \
    2>&1 | grep -v "^WARNING\|^I0000\|^W0000" | tee -a "$out/device_run.log"
  code=${PIPESTATUS[0]}
  if [ "$code" = 124 ]; then
    echo "$backend: stopped at DEVICE_RUN_BACKEND_S; the rows above are kept" | tee -a "$out/device_run.log"
  elif [ "$code" != 0 ]; then
    status=1
  fi
done
exit "$status"
