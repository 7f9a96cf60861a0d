#!/bin/bash
# The 350-step Hippocampus fold-0 runs of docs/benchmarks.md ("On a GPU"), in parallel on one GPU.
# Run from the repository root with the inputs in .gpu/ (docs/gpu_runs/README.md): bash .gpu/run.sh
# Env: SCHED (default _14epochs_25iters), DEVICE (cuda), LIMIT_S (470), RUNS ("nice:trainer ..."), NP (12),
# LOCAL=1 to use this machine's installed packages instead of the wheels in .gpu/whl.
set -u
G=$PWD/.gpu; W=${W:-/tmp/w}; OUTD=${OUT:-/tmp/out}; mkdir -p $W/logs $OUTD; cd $W  # not the repo root: its nnunet_lightseg/ would shadow the installed package
T0=$(date +%s); S=${SCHED:-_14epochs_25iters}; export SCHED=$S; LIMIT=${LIMIT_S:-470}
if [ ! -d /tmp/site/nnunetv2 ] && [ -z "${LOCAL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $G/whl/*.whl || exit 3
fi
[ -z "${LOCAL:-}" ] && export PYTHONPATH=/tmp/site:$G/stub PATH=/tmp/site/bin:$PATH
[ -n "${LOCAL:-}" ] && export PYTHONPATH=$G/stub:${PYTHONPATH:-}
DISC=$(python3 -c "import nnunet_lightseg._startup_hook as h; print(h.DISCOVERY_DIR)") || exit 4
export nnUNet_raw=$G/raw nnUNet_preprocessed=$W/pre nnUNet_results=$W/res nnUNet_extTrainer=$G/ext:$DISC
export nnUNet_compile=f OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1 nnUNet_def_n_proc=1 nnUNet_n_proc_DA=1
{ date -u; nvidia-smi -L 2>&1; python3 -c "import sys, torch, nnunetv2, blosc2, nibabel, nnunet_lightseg.trainers; print(sys.version.split()[0], 'torch', torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())" 2>&1; } | tee $W/logs/env.txt
python3 -c "import nnunet_lightseg.trainers" || exit 5
collect() {
  (cd $W && tar czf $OUTD/gpu_runs.tgz.tmp logs $(cd $W && ls -d res/*/*/fold_0/training_log_*.txt res/*/*/fold_0/validation/summary.json res/*/*/fold_0/debug.json pre/*/nnUNetPlans.json 2>/dev/null) 2>/dev/null; mv $OUTD/gpu_runs.tgz.tmp $OUTD/gpu_runs.tgz)
}
nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres -np ${NP:-12} > $W/logs/plan_and_preprocess.log 2>&1 || { tail -30 $W/logs/plan_and_preprocess.log; collect; exit 6; }
cp $G/splits_final.json $W/pre/Dataset004_Hippocampus/
echo "preprocessed at $(( $(date +%s) - T0 )) s"
python3 -c "import json; c=json.load(open('$W/pre/Dataset004_Hippocampus/nnUNetPlans.json'))['configurations']['3d_fullres']; print('plan', c['batch_size'], c['patch_size'], c['spacing'])"
B="nnUNetTrainerBaseline nnUNetTrainerUltraLightUNet nnUNetTrainerVeloxSeg nnUNetTrainerLightMedSeg nnUNetTrainerDALight3D"
RUNS=${RUNS:-"0:$(for t in $B; do printf "%s " ${t}${S}_seed0; done) 5:LMSgain003 LMSfullstem LMSgain003fullstem 12:$(for t in $B; do printf "%s " ${t}${S}_seed1; done)$(for t in UltraLightUNet LightMedSeg VeloxSeg DALight3D; do printf "%s " nnUNetTrainer${t}_Paper${S}_seed0; done)"}
nice_level=0
for r in $RUNS; do
  case $r in *:*) nice_level=${r%%:*}; r=${r#*:};; esac
  nice -n $nice_level nnUNetv2_train 4 3d_fullres 0 -tr $r -device ${DEVICE:-cuda} > $W/logs/$r.log 2>&1 &
  echo "$r nice $nice_level pid $!"
done
while [ -n "$(jobs -rp)" ] && [ $(( $(date +%s) - T0 )) -lt $LIMIT ]; do sleep 10; collect; done
echo "stopped waiting at $(( $(date +%s) - T0 )) s; still running: $(jobs -rp | wc -l)"
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv > $W/logs/nvidia_smi_end.txt 2>&1
kill $(jobs -rp) 2>/dev/null; sleep 2; collect
for f in $W/res/*/*/fold_0/validation/summary.json; do python3 -c "import json,sys; d=json.load(open('$f')); print(sys.argv[1].split('/')[-4], round(d['foreground_mean']['Dice'],4), [round(v['Dice'],4) for v in d['mean'].values()])" $f; done
for r in $RUNS; do r=${r#*:}; ls $W/res/*/${r}__*/fold_0/validation/summary.json >/dev/null 2>&1 || { echo "== $r unfinished or failed:"; tail -4 $W/logs/$r.log 2>/dev/null; }; done
