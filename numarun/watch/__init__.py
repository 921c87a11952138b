"""Watch placement over time: per-node samples, a process's locality, and the issues found.

The library face of ``numarun watch`` and of the supervisor's ``[watch]`` sampling, for
orchestration code that wants to watch without the CLI::

    from numarun.watch import Sampler, Thresholds, find_issues, locality

    sampler = Sampler()
    sampler.sample_nodes()                   # first reading: utilisation unknown (None)
    time.sleep(10)
    nodes = sampler.sample_nodes()           # utilisation since the first reading
    worker = locality(pid, home_nodes=[0])   # one numa_maps read
    issues = find_issues(nodes, [worker] if worker else [], Thresholds())

* :mod:`numarun.watch.sample`: :class:`NodeSample` (memory, CPU utilisation and the
  allocator's counters of one node), :class:`Balancing` (the kernel's NUMA balancing,
  promotion and demotion counters) and :class:`Sampler`, which reads them;
* :mod:`numarun.watch.locality`: :class:`Locality`, how much of a process's judged memory
  (anon, heap, stack, shared memory, huge pages; not file cache, as the placement report
  judges) is on its home nodes;
* :mod:`numarun.watch.issues`: :class:`Thresholds`, :class:`Issue` and
  :func:`find_issues`, the seed's rules (memory use more than 30 points apart across
  nodes, CPU utilisation more than 20 points apart, a process below its locality
  threshold).

Everything is read through :mod:`numarun.sysfs` and :mod:`numarun.procfs` under a root
(``/`` live, a fake tree in tests). Nothing here imports the supervisor or the commands.
"""

from __future__ import annotations

from numarun.watch.issues import Issue, Thresholds, find_issues
from numarun.watch.locality import Locality, locality, process_locality
from numarun.watch.sample import Balancing, NodeSample, Sampler

__all__ = [
    "Balancing",
    "Issue",
    "Locality",
    "NodeSample",
    "Sampler",
    "Thresholds",
    "find_issues",
    "locality",
    "process_locality",
]
