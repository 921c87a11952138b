"""The ``[watch]`` table: how often the supervisor samples its workers' placement, and what
it does about drift. One definition for the job spec, the plan, its JSON and the supervisor.

:mod:`numarun.spec` validates the table (pydantic, strict) into a :class:`Watch` record;
:class:`numarun.plan.Plan` carries it, ``numarun plan --json`` prints :meth:`Watch.to_dict`,
and :class:`~numarun.supervisor.manager.Supervisor` reads it from its
:class:`~numarun.supervisor.model.JobSpec`. Names, defaults and bounds live here.

This module is on ``numarun plan``'s path and stays cheap: no dataclasses, typing or re.
"""

from __future__ import annotations

from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The keys of ``[watch]``, in the JSON's order.
KEYS = ("interval", "threshold", "remediate", "migrate_rate_mbps")
REMEDIATE = ("off", "migrate")
DEFAULT_INTERVAL = 10.0
DEFAULT_THRESHOLD = 0.9
DEFAULT_RATE_MBPS = 64.0
#: Below this a sample every interval is no longer cheap (a numa_maps read per worker).
MIN_INTERVAL = 0.1
MAX_INTERVAL = 86400.0
#: A drift event is this many samples below the threshold in a row.
DRIFT_SAMPLES = 2
#: The supervisor's CPU budget for sampling, as a share of one CPU: when a sample (and the
#: state file it rewrites) costs more than this share of the interval, the next sample
#: waits longer, cost / budget seconds (numa_maps makes the kernel walk every page table
#: of a worker: about 7 ms of CPU per GiB of memory on a 2020s x86 machine).
CPU_BUDGET = 0.008

HINTS = {
    "interval": "write interval = 10 (seconds between samples, 0.1 to 86400)",
    "threshold": "write threshold = 0.9 (the share of judged pages on the policy's nodes, 0-1)",
    "remediate": 'write remediate = "off" or remediate = "migrate"',
    "migrate_rate_mbps": "write migrate_rate_mbps = 64 (MB per second moved back, above 0)",
    "watch": "write [watch] with interval, threshold, remediate, migrate_rate_mbps",
}


class Watch(Value):
    """How the supervisor keeps its workers' placement true while they run."""

    interval: float = DEFAULT_INTERVAL  # seconds between samples
    threshold: float = DEFAULT_THRESHOLD  # local_ratio below this is drift
    remediate: str = "off"  # "off" or "migrate"
    migrate_rate_mbps: float = DEFAULT_RATE_MBPS  # MB/s moved back, at most, on average

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in KEYS}

    def describe(self) -> str:
        """``every 10 s, threshold 0.9, remediate off``: for ``numarun plan``."""
        text = f"every {self.interval:g} s, threshold {self.threshold:g}"
        text += f", remediate {self.remediate}"
        if self.remediate == "migrate":
            text += f" at most {self.migrate_rate_mbps:g} MB/s"
        return text
