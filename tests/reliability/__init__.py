"""Reliability: what happens to a run when files are damaged, values go non-finite or the job is preempted."""
