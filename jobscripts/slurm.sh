#!/bin/bash
#SBATCH --job-name=${name}
#SBATCH --ntasks=${cores}
#SBATCH --time=${walltime}
${queue_directive}
#SBATCH --signal=B:USR1@${warning}
#SBATCH --output=%x.%j.log
#SBATCH --open-mode=append
#SBATCH --requeue
${marker} for Slurm (mtcmpi ${version}). Submit with: ${submit} THIS_FILE
# Log: ${name}.<job id>.log where you submit. ${warning} s before the walltime (up to 60 s more)
# Slurm sends SIGUSR1 to this shell only (--signal B:), which passes it to mpirun and so to the
# ranks; a requeued job (--requeue) runs this script again and resumes the same --out.

scheduler=slurm
job_id=$${SLURM_JOB_ID:?not under Slurm: submit this script with sbatch}
ranks=$${SLURM_NTASKS:?Slurm did not set SLURM_NTASKS}
hosts=()                     # mpirun reads the allocation from Slurm
resubmit() { sbatch --parsable --export="ALL,MTCMPI_RESUBMIT=$$1" "$$2"; }
