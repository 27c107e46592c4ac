#!/usr/bin/env bash
# Behaviour snapshot of a checkout, to prove a refactoring changed nothing: run it on the old and the new
# commit and diff the two folders.  usage: bash tools/behaviour_snapshot.sh REPO OUTDIR
# Captures: --help of every CLI, the losses and validation metrics of four 30-step trainings (TDD, TDD+Heun+EMA,
# AnimateLCM, SDXL), checksums of img2vid/txt2img renders, the compare table, and the zoo checksum tests.
set -u
REPO=$1; OUT=$2; mkdir -p $OUT/help $OUT/train $OUT/render
cd $REPO
export PYTHONPATH=$REPO OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 COLUMNS=100
for s in infer/img2vid.py infer/txt2img.py infer/compare.py train/distill_svd.py train/distill_sdxl.py; do
  python $s --help > $OUT/help/$(echo $s | tr / _).txt 2>&1
done
for m in ${HELP_MODULES:-tdd_video.cli.check_data tdd_video.cli.cache tdd_video.cli.synthetic tools.zoo.build_sdxl tools.zoo.sdxl_student}; do
  python -m $m --help > $OUT/help/$m.txt 2>&1
done
T=/tmp/proofrun.$$; rm -rf $T
python train/distill_svd.py --config configs/toy/tdd_svd_tiny.yaml train.max_steps=30 run.output_dir=$T/svd train.progress=false validation.metric_every=15 > $OUT/train/svd.out 2>&1
python train/distill_svd.py --config configs/toy/tdd_svd_tiny.yaml train.max_steps=30 run.output_dir=$T/heun train.progress=false method.teacher_solver=heun method.teacher_substeps=2 method.target_ema=0.95 > $OUT/train/heun.out 2>&1
python train/distill_svd.py --config configs/toy/animatelcm_svd_tiny.yaml train.max_steps=30 run.output_dir=$T/alcm train.progress=false validation.metric_every=15 > $OUT/train/alcm.out 2>&1
python train/distill_sdxl.py --config configs/toy/tdd_sdxl_tiny.yaml train.max_steps=30 run.output_dir=$T/sdxl train.progress=false validation.metric_every=15 validation.reference_guidance=[4.5] > $OUT/train/sdxl.out 2>&1
for r in svd heun alcm sdxl; do
  python - $T/$r/metrics.jsonl > $OUT/train/$r.losses <<'PY'
import json,sys
for line in open(sys.argv[1]):
    d=json.loads(line); print(json.dumps({k:v for k,v in d.items() if k.startswith(("loss","val/","step","grad_norm"))}, sort_keys=True))
PY
done
R=$T/render; mkdir -p $R
python infer/img2vid.py --steps 4 --out $R/a/ --no-progress > /dev/null 2>&1
python infer/img2vid.py --steps 4 --eta 0 --schedule tdd-nonuniform --clip-x0 dynamic:2.5 --clip-steps 1 --out $R/b/ --no-progress > /dev/null 2>&1
python infer/img2vid.py --steps 4 --teacher-refine 0.05 --guidance 1.5 --out $R/c/ --no-progress > /dev/null 2>&1
python infer/img2vid.py --model toy-svd --steps 4 --sampler animatelcm --out $R/d/ --no-progress > /dev/null 2>&1
python infer/img2vid.py --model tiny --steps 2 --out $R/e/ --no-progress > /dev/null 2>&1
python infer/txt2img.py --steps 4 --prompt "a red circle" --out $R/f.png --no-progress > /dev/null 2>&1
python infer/txt2img.py --steps 4 --eta 0.2 --prompt "a blue square" --out $R/g.png --no-progress > /dev/null 2>&1
python infer/compare.py teacher@25 tdd@4 tdd@4+refine --seeds 3 --out $R/cmp --quiet > $OUT/render/compare.out 2>&1
python - $R > $OUT/render/checksums.txt <<'PY'
import hashlib, sys, pathlib, numpy as np
from PIL import Image
root = pathlib.Path(sys.argv[1])
for p in sorted(root.rglob("*.png")):
    if "cmp" in p.parts: continue
    a = np.asarray(Image.open(p).convert("RGB"))
    print(p.relative_to(root), hashlib.sha256(a.tobytes()).hexdigest()[:16])
import json
for p in sorted(root.rglob("*.json")):
    if "cmp" in p.parts:
        d = json.loads(p.read_text())
        print(p.relative_to(root), json.dumps(d, sort_keys=True, default=str)[:3000])
PY
python -m pytest -q -p no:cacheprovider tests/test_zoo.py tests/test_sdxl_zoo.py > $OUT/render/zoo_tests.txt 2>&1; echo "zoo tests rc=$?" >> $OUT/render/zoo_tests.txt
tail -1 $OUT/render/zoo_tests.txt
rm -rf $T
