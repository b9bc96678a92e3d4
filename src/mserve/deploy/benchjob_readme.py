"""The README.md that ``mserve deploy bench-job`` writes beside its Job: how to run it, collect
the N results (``kubectl logs`` per indexed pod, or the files on a claim) and merge them. A pure
function of the :class:`~mserve.deploy.benchjob.BenchJob`."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from mserve.deploy.benchjob import INDEX_ANNOTATION, INDEX_ENV, JOB_FILE, RESULTS_DIR

if TYPE_CHECKING:
    from mserve.deploy.benchjob import BenchJob


def readme(job: BenchJob) -> str:
    """How to run the Job, collect its N results and merge them."""
    ns = f" -n {job.namespace}" if job.namespace else ""
    option, levels = job.pod_levels()
    total = job.concurrency if option == "--concurrency" else job.rate
    last = job.workers - 1
    command = shlex.join(["mserve", *job.bench_args()])
    files = "worker-*.json" if job.results_pvc is None else "results/worker-*.json"
    if job.results_pvc is None:
        collect = f"""\
Each pod prints its result JSON to stdout. Once the Job is complete:

```bash
for i in $(seq 0 {last}); do
  kubectl{ns} logs -l job-name={job.name},{INDEX_ANNOTATION}=$i --tail=-1 > worker-$i.json
done
```

(`--tail=-1`: with a label selector, `kubectl logs` prints only the last 10 lines otherwise.)
A pod's log is its result only: a file that does not parse holds an error message instead."""
    else:
        collect = f"""\
Each pod writes `{RESULTS_DIR}/worker-INDEX.json` into the claim `{job.results_pvc}` (pods on
several nodes need a ReadWriteMany claim). To copy them out, mount the claim in a pod that has
`tar`:

```bash
kubectl{ns} run {job.name}-fetch --image=busybox --restart=Never --overrides='{{"spec":{{\
"volumes":[{{"name":"r","persistentVolumeClaim":{{"claimName":"{job.results_pvc}"}}}}],\
"containers":[{{"name":"fetch","image":"busybox","command":["sleep","600"],\
"volumeMounts":[{{"name":"r","mountPath":"{RESULTS_DIR}"}}]}}]}}}}'
kubectl{ns} wait --for=condition=Ready pod/{job.name}-fetch
kubectl{ns} cp {job.name}-fetch:{RESULTS_DIR} results
kubectl{ns} delete pod {job.name}-fetch
```"""
    return f"""\
# Distributed load: {job.name}

{job.workers} pods of `mserve bench` run at once against `{job.target}`:

- the load in all: `{option} {total}`; each pod runs `{option} {",".join(levels)}`
- each step: {job.warmup_s:g} s of warm-up, then {job.duration_s:g} s measured
- each pod's command, where Kubernetes fills in `$({INDEX_ENV})`, the pod's index (also its
  seed):

```
{command}
```

## Run

```bash
kubectl apply -f {JOB_FILE}
kubectl{ns} wait --for=condition=complete job/{job.name} --timeout={job.deadline_s()}s
```

The Job gives up after {job.deadline_s()} s (activeDeadlineSeconds), and never runs a failed
pod again: a pod run later would not overlap the others.

## Collect the {job.workers} results

{collect}

## Merge them

```bash
mserve results merge {files} -o merged.json --save
mserve report merged.json
```

The merge adds the latency histograms bucket by bucket and the throughputs, and warns when
the pods measured together for less than 90% of their span: pods that start apart (an image
pull, a busy node) shorten the overlap. Write the Job with `--start-at TIME` (a few minutes
ahead) so that every pod waits for the same moment, or pull the image onto the nodes first
and measure for much longer than the pods take to start.

## Clean up

```bash
kubectl{ns} delete job {job.name}
```
"""
