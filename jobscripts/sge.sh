#!/bin/bash
#$$ -N ${name}
#$$ -pe ${pe} ${cores}
#$$ -l h_rt=${walltime},s_rt=${soft_walltime}
${queue_directive}
#$$ -cwd
#$$ -V
#$$ -j y
#$$ -o $$JOB_NAME.$$JOB_ID.log
#$$ -S /bin/bash
#$$ -r y
${marker} for Grid Engine (mtcmpi ${version}). Submit with: ${submit} THIS_FILE
# Log: ${name}.<job id>.log where you submit. At s_rt, ${warning} s before h_rt, Grid Engine sends
# SIGUSR1 to the job's process group: this shell, which passes it to mpirun and so to the ranks.
# No -notify needed (mtcmpi would stop cleanly on its SIGUSR2 before a qdel's kill, too).

scheduler=sge
job_id=$${JOB_ID:?not under Grid Engine: submit this script with qsub}
ranks=$${NSLOTS:?Grid Engine did not set NSLOTS}
hosts=()                     # mpirun reads $$PE_HOSTFILE
resubmit() { qsub -terse -v "MTCMPI_RESUBMIT=$$1" "$$2"; }
