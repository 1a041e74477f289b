#!/usr/bin/env bash
# Issue #8 in one run on a lent H100/H200 (the device tool's `run`, from the repo root):
#   bash bench/gpu_check.sh            # writes JSON + logs to $OUT (or ./bench_out)
# Needs only the GPU image's torch, transformers, peft, accelerate and PYTHONPATH=. ;
# about 8-10 minutes in all. Each step has its own time limit so one hang cannot eat the lease.
set -uo pipefail
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
timeout 330 python bench/train_throughput.py --shape llava-7b --steps 5 --warmup 2 --micro-batch 8 \
    --checkpointing selective --checkpoint-fraction 0.5 \
    --variant micro_batch=16,checkpoint_fraction=0.5 --variant micro_batch=16,checkpoint_fraction=0.25 \
    --variant micro_batch=8,checkpointing=off --variant micro_batch=16,checkpoint_fraction=0.5,compile=true \
    --json-out "$OUT/train_throughput.json" 2>&1 | tee "$OUT/train_throughput.log"
timeout 200 python bench/eval_throughput.py --shape llava-7b --images 128 --batch-images 16 \
    --generate-questions 24 --max-new-tokens 8 --json-out "$OUT/eval_throughput_7b.json" 2>&1 | tee "$OUT/eval_throughput.log"
