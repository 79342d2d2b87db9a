//! glibc heap settings for a long-running server, applied once at startup
//! before any shard thread exists. Touches nothing but the C allocator's
//! process-wide tunables.
//!
//! By default glibc gives the free top of a heap back to the kernel as soon
//! as it passes 128 KiB (`sbrk` for the main arena, `madvise(DONTNEED)` for a
//! thread's arena). A shard allocates and frees the same few blocks on every
//! request (the request's future alone is ~7 KiB), so under load its arena
//! was shrunk and grown again constantly: 0.23 page faults per proxied
//! request, each one zeroing a page. Keeping up to [`TRIM_THRESHOLD`] of free
//! top per arena (one arena per shard thread) removes that churn; it costs at
//! most that much resident memory per shard after a burst, and buffers for
//! bytes in flight are not on this heap at all (`buffer.rs` maps them).

/// Free memory at the top of an arena that glibc keeps instead of returning.
const TRIM_THRESHOLD: i32 = 64 << 20;

/// Allocations from this size up get their own mapping. Setting the trim
/// threshold switches off glibc's sliding mmap threshold, so it is fixed
/// here at a size no per-request allocation reaches.
const MMAP_THRESHOLD: i32 = 4 << 20;

/// Applies the settings above. Harmless to call more than once.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_for_server() {
    // SAFETY: mallopt only updates allocator parameters; it is called before
    // the shard threads start, and glibc takes its own lock anyway.
    let applied = unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    };
    if !applied {
        log::warn!("mallopt refused the heap settings; running with glibc's defaults");
    }
}

/// Other C libraries (musl) keep no trim threshold to tune.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_for_server() {}
