//! A memory budget fixes glibc's mmap threshold, so blocks RocksDB frees leave the process.
//! Its own test binary: the threshold is one setting of the whole process, and the check counts
//! the process's mmapped blocks, which other tests running beside it would change.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_budget_keeps_large_blocks_mmapped_after_a_large_free() {
    use std::hint::black_box;

    fn mmapped_blocks() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { libc::mallinfo2() }.hblks
    }
    const MB: usize = 1 << 20;

    // Without the fix, freeing an mmapped 1 MiB block raises glibc's threshold past 1 MiB.
    let first = black_box(vec![1u8; MB]);
    drop(first);
    let before = mmapped_blocks();
    let held: Vec<Vec<u8>> = (0..8).map(|_| black_box(vec![1u8; MB])).collect();
    let dynamic = mmapped_blocks() - before;
    drop(held);
    assert_eq!(
        dynamic, 0,
        "glibc's dynamic threshold: 1 MiB blocks come from the heap"
    );

    // A budget fixes it at 128 KiB: 1 MiB blocks are mmapped again, and unmapped when freed.
    let _shared = statefs_backend::rocks::SharedResources::new(16 * MB, 0.5).unwrap();
    let before = mmapped_blocks();
    let held: Vec<Vec<u8>> = (0..8).map(|_| black_box(vec![1u8; MB])).collect();
    assert_eq!(mmapped_blocks() - before, 8);
    drop(held);
    assert_eq!(
        mmapped_blocks(),
        before,
        "freed blocks went back to the system"
    );
}
