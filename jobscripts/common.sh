
# ---- the same for every scheduler (jobscripts/common.sh) ----
say() { echo "$$(date '+%F %T') mtcmpi-jobscript: $$*"; }
venv=${venv}
python="$$venv/bin/python"
mpirun=(${mpirun})
run=(${run_args})
out=${out}
script=${script}   # where mtcmpi jobscript -o wrote this file, in case $$0 is not readable
count=$${MTCMPI_RESUBMIT:-0}
max=$${MTCMPI_MAX_RESUBMIT:-${max_resubmit}}

# The venv must be on a filesystem every node sees, and so must the task module and its inputs.
${modules}
source "$$venv/bin/activate" || { say "cannot activate $$venv: is it on a filesystem this node sees?"; exit 2; }
set -uo pipefail
# Open MPI: a batch system that ends the job (scancel, the walltime) also signals mpirun, which
# then SIGTERMs the ranks and SIGKILLs them this many seconds later (1 by default), before the
# batch system's own kill delay (Slurm's KillWait, 30 s): give the ranks that long to store.
export OMPI_MCA_odls_base_sigkill_timeout=$${OMPI_MCA_odls_base_sigkill_timeout:-30}
version=$$("$$python" -m mtcmpi --version 2>&1) || { say "$$python -m mtcmpi fails: $$version"; exit 2; }
command=("$${mpirun[@]}" -n "$$ranks" "$${hosts[@]}" "$$python" -m mtcmpi run "$${run[@]}")
say "$$scheduler job $$job_id on $$(hostname): $$ranks ranks, $$version, resubmission $$count (at most $$max)"
say "running:$$(printf ' %q' "$${command[@]}")"

# A walltime warning arrives as SIGUSR1 (see above). mpirun runs in the background, in a process
# group of its own (set -m), so that the warning reaches this shell alone, at once, whether the
# scheduler signals the shell or its process group; the shell passes it on to mpirun, once, and
# mpirun to the ranks. mtcmpi then hands out no more tasks, lets the running ones finish
# (--grace), stores everything and exits 75. Other signals (scancel, qdel) are not caught: a
# cancelled job is not resubmitted.
pid="" warned=""
on_warning() {
  [ -n "$$pid" ] || return 0
  warned=yes
  say "got SIGUSR1 (the walltime is near): passing it to mpirun, so mtcmpi stops and stores everything"
  kill -USR1 "$$pid" 2>/dev/null || true
}
trap on_warning USR1
set -m
"$${command[@]}" </dev/null &
pid=$$!
set +m
while kill -0 "$$pid" 2>/dev/null; do wait "$$pid"; done   # a trapped signal ends a wait early
wait "$$pid"; rc=$$?
pid=""

# Finished, or resubmit? mpirun's exit status is not enough (after a signal it may be 1 although
# the ranks exit 75), so ask the results file: it exists and its journal is gone when the run ended.
left="" failed=""
if [ -f "$$out" ] && [ ! -d "$$out.journal" ]; then
  read -r left failed < <("$$python" -m mtcmpi report "$$out" --json | "$$python" -c 'import json, sys
s = json.load(sys.stdin)["status"]
print(s["not-run"], s["failed"] + s["timeout"] + s["crashed"])')
fi
if [ "$$left" = 0 ]; then
  status=0; [ "$$failed" = 0 ] || status=1
  say "finished: every task of $$out has run, $$failed failed (mpirun exit $$rc); exit $$status"
  exit "$$status"
fi
if [ "$$rc" != 75 ] && [ -z "$$warned" ]; then
  say "mpirun exit $$rc, not stopped by the walltime warning: not resubmitting (see the messages above)"
  exit "$$rc"
fi
say "stopped early (mpirun exit $$rc$${warned:+, after the warning}), $${left:-some} tasks left"
if [ "$$count" -ge "$$max" ]; then
  say "not resubmitting: done $$count times already (MTCMPI_MAX_RESUBMIT=$$max); submit again to go on"
  exit 75
fi
self=$$0
grep -qs "^${marker} " "$$self" || self=$$script
if ! grep -qs "^${marker} " "$$self"; then
  say "cannot find this job script to resubmit (write it with mtcmpi jobscript -o FILE); submit it again by hand, it resumes"
  exit 75
fi
if new=$$(resubmit "$$((count + 1))" "$$self" 2>&1); then
  say "resubmitted as job $$new (resubmission $$((count + 1)) of at most $$max); it resumes $$out"
else
  say "resubmitting failed: $$new; submit $$self again by hand, it resumes"
fi
exit 75
