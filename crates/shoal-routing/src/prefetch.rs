//! A hint to the CPU to start loading memory that is about to be read.
//!
//! A lookup in the range cache ends in a chain of dependent loads, each a likely cache
//! miss. Where a later load's address is known to be one of a few lines before the load
//! that decides between them completes, asking for all of them at once turns two round
//! trips to memory into one.

/// Asks the CPU to bring the memory of `items` into cache, one hint per cache line. A hint
/// only: it changes nothing, cannot fault, and is a no-op on targets other than x86-64.
#[inline]
pub(crate) fn prefetch<T>(items: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const LINE: usize = 64;
        let start = items.as_ptr().cast::<i8>();
        let mut offset = 0;
        while offset < std::mem::size_of_val(items) {
            // SAFETY: `prefetch` needs SSE, part of every x86-64 target. A prefetch reads
            // nothing architecturally and never faults, whatever the address; this one is
            // inside `items` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
            offset += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = items;
}
