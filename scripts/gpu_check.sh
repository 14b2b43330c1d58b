#!/usr/bin/env bash
# The GPU check, prepared for a machine with an NVIDIA GPU:
#   1. scoring: `--device auto` must pick CUDA (recorded in runs.device), and CUDA and CPU
#      predictions must agree to 1e-4 (relative);
#   2. training: `train --device auto` must train on CUDA (recorded in the checkpoint's
#      provenance), and its held-out mean ratio to naive must be within 0.01 of a CPU training's.
# Usage: bash scripts/gpu_check.sh [OUT_DIR]   (after `make install` and the GPU install in docs/operations.md#gpus)
# Exits 0 when all hold, 1 when they do not, 2 when CUDA is not usable here.
set -euo pipefail
out=${1:-gpu-check}
fc=".venv/bin/forecaster"
rm -rf "$out"; mkdir -p "$out"
$fc sample-data "$out/data" --n-tickers 200 --days 300 --seed 1 --ar 0.3 >/dev/null
$fc ingest "$out/data" --db "sqlite:///$out/cpu.db" -q >/dev/null
$fc train --all --epochs 3 --db "sqlite:///$out/cpu.db" --out "$out/m.pt" -q >/dev/null
$fc export "$out/m.pt" >/dev/null
cp "$out/cpu.db" "$out/gpu.db"
$fc predict --model "$out/m.onnx" --db "sqlite:///$out/cpu.db" --device cpu --from 2017-10-01
if ! $fc predict --model "$out/m.onnx" --db "sqlite:///$out/gpu.db" --device auto --from 2017-10-01; then
  echo "predict --device auto failed"; exit 1
fi
.venv/bin/python - "$out" <<'PY'
import sqlite3, sys
out = sys.argv[1]
gpu = sqlite3.connect(f"{out}/gpu.db")
devices = {d for (d,) in gpu.execute("SELECT DISTINCT device FROM runs WHERE status = 'succeeded'")}
if devices != {"cuda"}:
    print(f"auto used {sorted(devices)}, not CUDA: is CUDA usable here? (see docs/operations.md#gpus)")
    sys.exit(2)
q = "SELECT ticker, as_of, predicted_close FROM predictions ORDER BY ticker, as_of"
cpu_rows = sqlite3.connect(f"{out}/cpu.db").execute(q).fetchall()
gpu_rows = gpu.execute(q).fetchall()
assert [r[:2] for r in cpu_rows] == [r[:2] for r in gpu_rows], "different predictions were made"
worst = max(abs(a[2] - b[2]) / abs(a[2]) for a, b in zip(cpu_rows, gpu_rows))
print(f"auto picked CUDA; {len(gpu_rows)} predictions; largest CUDA vs CPU relative difference {worst:.3g}")
sys.exit(0 if worst <= 1e-4 else 1)
PY


# Training on CUDA (needs torch's CUDA build: see README, Install).
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 2)"; then
  echo "torch cannot use CUDA here (a CPU build?): training check not run"; exit 2
fi
$fc train --all --epochs 3 --device auto --db "sqlite:///$out/cpu.db" --out "$out/cuda.pt" -q >/dev/null
$fc train --all --epochs 3 --device cpu --db "sqlite:///$out/cpu.db" --out "$out/cpu.pt" -q >/dev/null
.venv/bin/python - "$out" <<'PY'
import json, sys
out = sys.argv[1]
from forecaster.training import checkpoint
device = checkpoint.load(f"{out}/cuda.pt")["provenance"]["device"]
if device != "cuda":
    print(f"train --device auto trained on {device}, not CUDA"); sys.exit(1)
ratio = {d: json.load(open(f"{out}/{d}.metrics.json"))["overall"]["mean_ratio"] for d in ("cuda", "cpu")}
print(f"training picked CUDA; held-out mean ratio CUDA {ratio['cuda']:.4f}, CPU {ratio['cpu']:.4f}")
sys.exit(0 if abs(ratio["cuda"] - ratio["cpu"]) <= 0.01 else 1)
PY
