//! The crate's only `unsafe` code: the libc calls of `memstat`, each behind a safe function.

/// The size of a memory page in bytes (4096 if the system will not say).
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Returns the allocator's unused heap pages to the system (glibc's `malloc_trim(0)`).
pub fn malloc_trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; it is thread-safe and takes no
    // pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_size_is_a_power_of_two() {
        let size = super::page_size();
        assert!(size >= 4096 && size.is_power_of_two(), "{size}");
    }
}
