// CpuQuota: how many CPUs a cgroup's CPU *quota* lets this process use.
//
// A container's CPU limit (Kubernetes `limits.cpu`, systemd's CPUQuota=,
// `docker run --cpus`) is a quota of CPU time per period, not an affinity
// mask: sched_getaffinity still reports every core of the host. A daemon
// that sized its threads by the mask alone would start 32 threads in a pod
// limited to 2 CPUs, and they would contend for the quota (throttling).
// Go's runtime and the JVM read the quota the same way.
#ifndef TALLY_DAEMON_IO_CPU_QUOTA_H_
#define TALLY_DAEMON_IO_CPU_QUOTA_H_

#include <string>

namespace tally::io {

// The CPUs the tightest CPU quota on the process's cgroup or any of its
// ancestors allows, rounded up (a quota of 1.5 CPUs gives 2), at least 1; 0
// when no quota is set or none can be read.
//
// `cgroup_root` is where the cgroup file systems are mounted (/sys/fs/cgroup);
// `proc_self_cgroup` the text of /proc/self/cgroup. Both hierarchies are read:
//   * cgroup v2 (the line "0::PATH"): `cpu.max` ("QUOTA PERIOD" or "max PERIOD")
//     in ROOT/PATH and each of its parents up to ROOT;
//   * cgroup v1 (the line "N:...cpu...:PATH"): `cpu.cfs_quota_us` (-1 = none)
//     and `cpu.cfs_period_us` in the cpu controller's mount (ROOT/cpu,cpuacct
//     or ROOT/cpu) at PATH and each parent up to the mount.
// A directory that does not exist is skipped (inside a container PATH may
// name the host's view while the mount shows the container's own group at
// its root). Unreadable or malformed files count as no quota.
// Thread safety: reads files only; safe from any thread.
int CgroupCpuLimit(const std::string& cgroup_root, const std::string& proc_self_cgroup);

// The same for this process: /sys/fs/cgroup and /proc/self/cgroup.
int CgroupCpuLimit();

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_CPU_QUOTA_H_
