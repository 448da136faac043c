#!/bin/bash
#PBS -N ${name}
#PBS -l nodes=${nodes}:ppn=${ppn}
#PBS -l walltime=${walltime}
${queue_directive}
#PBS -j oe
#PBS -V
#PBS -r y
${marker} for PBS/Torque (mtcmpi ${version}). Submit with: ${submit} THIS_FILE
# Log: ${name}.<job id>.log where you submit (written as the job runs; PBS's own ${name}.o<job id>
# only points to it). PBS sends no warning before the walltime, so mtcmpi run gets --walltime
# ${stop_after}: it starts no task that would not end by then (less --grace), stores everything
# and exits 75. `qsig -s USR1 <job id>` stops the run early the same way. Slurm runs this script
# too (sbatch reads #PBS lines; Slurm's PBS qsub wrapper uses it).

scheduler=pbs
job_id=$${PBS_JOBID:-$${SLURM_JOB_ID:?not under PBS: submit this script with qsub}}
cd "$${PBS_O_WORKDIR:-.}" || exit 2
echo "log: $$PWD/${name}.$$job_id.log"
exec >>"${name}.$$job_id.log" 2>&1
if [ -n "$${PBS_NODEFILE:-}" ]; then
  ranks=$$(wc -l <"$$PBS_NODEFILE")
  hosts=(-machinefile "$$PBS_NODEFILE")
else                         # run by Slurm (slurm-wlm-torque's qsub): mpirun reads Slurm's allocation
  ranks=$${SLURM_NTASKS:?neither PBS_NODEFILE nor SLURM_NTASKS is set: how many cores has this job?}
  hosts=()
fi
resubmit() { qsub -V -v "MTCMPI_RESUBMIT=$$1" "$$2"; }
