"""Print two CPU lists that split this process's CPUs in half by physical core, hyper-thread siblings kept together
(gpu_issue16.sh triton with PIN=halves: SERVER_CPUS and CLIENT_CPUS that share no physical core)."""
from __future__ import annotations

import os


def parse_cpus(text: str) -> set[int]:
    """'0-3,8' -> {0, 1, 2, 3, 8} (Linux's CPU-list form, as in taskset -c and the topology files)."""
    out = set()
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def siblings(cpu: int) -> set[int]:
    """The CPUs sharing `cpu`'s physical core (itself included), from Linux's topology files."""
    return parse_cpus(open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read().strip())


def halves(cpus, siblings_of=siblings) -> tuple[list[int], list[int]]:
    """`cpus` as two lists of whole physical cores, the first half of the cores (in order of their first CPU) and
    the rest; with an odd count the second has one core more."""
    cores, seen = [], set()
    for c in sorted(cpus):
        if c not in seen:
            core = sorted(siblings_of(c) & set(cpus))
            seen.update(core)
            cores.append(core)
    h = len(cores) // 2
    return [c for core in cores[:h] for c in core], [c for core in cores[h:] for c in core]


if __name__ == "__main__":
    print(*(",".join(map(str, half)) for half in halves(os.sched_getaffinity(0))))
