# Local scheduling: never more cores (or GPUs) in use than --cores (--resources gpu=N) provide.
#
# Snakemake 9.10 to 9.16 starts a job that is the only ready one without taking its threads and
# resources from the pool, yet gives them back when the job ends: each such job adds its cores
# (and GPUs) to the pool for the rest of the run (snakemake/snakemake#3913, fixed in 9.17.0 by
# #4026). In this workflow the last job of the first batch (the data preparation or a run's
# settings) is often such a job, so `--cores 2` went on to run three single-threaded pretraining
# jobs at once. On those versions, a job selected alone is charged to the pool here, as 9.17
# does.

import snakemake
from packaging.version import InvalidVersion, Version

SINGLE_JOB_ACCOUNTING_BROKEN = (Version("9.10.0"), Version("9.17.0"))


def charge_jobs_selected_alone():
    try:
        version = Version(Version(snakemake.__version__).base_version)
    except InvalidVersion:
        return
    low, high = SINGLE_JOB_ACCOUNTING_BROKEN
    if not low <= version < high:
        return
    from snakemake.scheduling.job_scheduler import JobScheduler

    select = JobScheduler.job_selector
    if getattr(select, "charges_jobs_selected_alone", False):
        return

    def job_selector(self, jobs):
        selected = select(self, jobs)
        # One ready job takes the early return that skips update_available_resources; with more,
        # the pool was updated already.
        if len(jobs) == 1 and selected:
            with self._lock:
                self.update_available_resources(selected)
        return selected

    job_selector.charges_jobs_selected_alone = True
    JobScheduler.job_selector = job_selector


charge_jobs_selected_alone()
