"""numarun: NUMA placement launcher, workload supervisor and placement report for Linux.

The library is what the CLI is made of, in the direction of dependency
kernel boundary → topology → placement → launch/supervise → report → CLI:

* :mod:`numarun.topology` — ``read_topology(root)``, ``load_topology(path)``, ``Topology``;
* :mod:`numarun.mempolicy` — ``MemoryPolicy``, ``set_mempolicy``, ``thread_policy`` (per thread);
* :mod:`numarun.placement` — the one placement engine: ``plan_prefix(request, topology)``,
  ``plan_rank(...)``, ``plan_slots(topology, count)``; refusals from :mod:`numarun.refusals`;
* :mod:`numarun.spec` / :mod:`numarun.plan` — ``load_spec(path)``, ``plan_job(topology, spec)``;
* :mod:`numarun.launch` — ``apply_plan``, ``exec_command``;
* :mod:`numarun.supervisor` — ``Supervisor``;
* :mod:`numarun.report` / :mod:`numarun.numamaps` — where pages are, and verdicts.

Names below are imported on first use, so ``import numarun`` stays cheap: the prefix
launcher runs before every wrapped command and must not pay for the supervisor.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__version__ = "0.1.0"

_EXPORTS = {
    "Topology": "numarun.topology",
    "read_topology": "numarun.topology",
    "load_topology": "numarun.topology",
    "save_snapshot": "numarun.topology",
    "MemoryPolicy": "numarun.mempolicy",
    "set_mempolicy": "numarun.mempolicy",
    "get_mempolicy": "numarun.mempolicy",
    "thread_policy": "numarun.mempolicy",
    "load_spec": "numarun.spec",
    "plan_job": "numarun.plan",
    "plan_slots": "numarun.placement.slots",
    "Plan": "numarun.plan",
    "Supervisor": "numarun.supervisor",
    "NumarunError": "numarun.errors",
}

__all__ = [  # noqa: RUF022 - grouped as _EXPORTS is
    "__version__",
    "Topology",
    "read_topology",
    "load_topology",
    "save_snapshot",
    "MemoryPolicy",
    "set_mempolicy",
    "get_mempolicy",
    "thread_policy",
    "load_spec",
    "plan_job",
    "plan_slots",
    "Plan",
    "Supervisor",
    "NumarunError",
]


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module) on first use, so a
    package's names cost nothing until used (the prefix launcher must not pay for them)."""

    def getattr_(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib

        return getattr(importlib.import_module(module), name)

    return getattr_


__getattr__ = lazy_exports(__name__, _EXPORTS)
