"""The placement engine: the one place that decides where a process runs and where its memory goes.

Every front end is a short composition over these modules, so a rule or a refusal is written
once and reads the same from the prefix form, a rank and a job spec:

* :mod:`.bounds` — what this process may use: the cgroup's cpuset (the limit) and the
  inherited CPU affinity (a choice that explicit options may widen within the cpuset);
* :mod:`.cores` — physical cores per node (from ``Topology.cores``) and how CPUs are taken
  from them, SMT rule included;
* :mod:`.resolve` — node and CPU specs checked against the machine and the bounds, and the
  memory nodes of a policy (``local``, ``all``, ``local+cpuless``, a node spec);
* :mod:`.choose` — choosing a node by free memory and CPU load (an injected chooser);
* :mod:`.slots` — N workers (ranks, slots) over a pool of cores, each with its memory policy;
* :mod:`.prefix` and :mod:`.rank` — the prefix form's and ``--per-rank``'s compositions;
  the job planner's is :mod:`numarun.plan`.

Refusals come from :mod:`numarun.refusals`. Nothing here changes the system: applying a
placement is :mod:`numarun.launch`'s job.
"""

#: What numarun tells a process it places near a device (:func:`.resolve.device_env`), for
#: ``numarun placement`` to read. Here rather than in :mod:`.resolve` so that the report
#: reads them without importing the resolver (and the refusal catalogue) on every run.
DEVICE_ENV, DEVICE_NODE_ENV = "NUMARUN_DEVICE", "NUMARUN_DEVICE_NODE"
