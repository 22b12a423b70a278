//! `memstat`: the process's memory, in the three figures James printed from the JVM.
//!
//! * Free Memory: memory the system can still give (`MemAvailable`, capped by the cgroup
//!   limit's headroom);
//! * Total Memory: what the process holds now (its resident set);
//! * Max Memory: what it may hold at most (the cgroup's `memory.max`, else `MemTotal`).
//!
//! `memstat -gc` first returns the allocator's free memory to the system (`malloc_trim`), the
//! nearest thing to Java's `System.gc()`, and prints the figures before and after.

use crate::session::Out;
use crate::sys;

/// `memstat [-gc]`.
pub fn memstat(argument: Option<&str>, out: &mut Out) {
    out.line("Current memory statistics:");
    print_figures(out);
    if argument.is_some_and(|a| a.trim().eq_ignore_ascii_case("-gc")) {
        release_free_memory();
        out.line("And after releasing free memory:");
        print_figures(out);
    }
}

fn print_figures(out: &mut Out) {
    let total = resident_bytes();
    let max = max_bytes();
    let free = available_bytes().min(max.saturating_sub(total));
    out.line(format!("\tFree Memory: {free}"));
    out.line(format!("\tTotal Memory: {total}"));
    out.line(format!("\tMax Memory: {max}"));
}

/// The resident set of this process, from `/proc/self/statm`.
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * sys::page_size()
}

/// A `/proc/meminfo` field, in bytes.
fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn available_bytes() -> u64 {
    meminfo("MemAvailable").unwrap_or(0)
}

/// The cgroup (v2) memory limit when there is one, else the machine's memory.
fn max_bytes() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let machine = meminfo("MemTotal").unwrap_or(0);
    cgroup.map_or(machine, |limit| limit.min(machine))
}

/// Gives the allocator's free heap pages back to the system (glibc's `malloc_trim`): what
/// connections that have closed used is returned, not kept for the next burst.
pub fn release_free_memory() {
    sys::malloc_trim();
}
