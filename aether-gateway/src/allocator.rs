//! Allocator statistics, from a counting global allocator.
//!
//! The system allocator does not report what it holds without foreign
//! calls, so a program that wants allocator statistics in its metrics
//! installs the counting wrapper of the system allocator
//! ([`INSTRUMENTED_SYSTEM`], from the `stats_alloc` crate) as its global
//! allocator; the `aether-gateway` program does:
//!
//! ```
//! use std::alloc::System;
//! use aether_gateway::allocator::{self, INSTRUMENTED_SYSTEM, StatsAlloc};
//!
//! #[global_allocator]
//! static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;
//!
//! fn main() {
//!     let held = vec![0u8; 4096];
//!     let stats = allocator::stats().expect("installed");
//!     assert!(stats.live_bytes() >= held.len() as u64);
//! }
//! ```
//!
//! It costs a few atomic additions per allocation. A program that does not
//! install it (a library user embedding the gateway) simply has no
//! allocator metrics: [`stats`] returns `None`.

pub use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

/// What the counting allocator saw since the program started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Allocations made.
    pub allocations: u64,
    /// Allocations freed.
    pub deallocations: u64,
    /// Allocations resized.
    pub reallocations: u64,
    /// Bytes allocated (growths included).
    pub allocated_bytes: u64,
    /// Bytes freed (shrinks included).
    pub freed_bytes: u64,
}

impl AllocatorStats {
    /// Bytes allocated and not freed: the heap the program holds.
    pub fn live_bytes(&self) -> u64 {
        self.allocated_bytes.saturating_sub(self.freed_bytes)
    }
}

/// The counting allocator's statistics, or `None` if this program does not
/// use it as its global allocator (it then never counted an allocation).
pub fn stats() -> Option<AllocatorStats> {
    let s = INSTRUMENTED_SYSTEM.stats();
    (s.allocations > 0).then_some(AllocatorStats {
        allocations: s.allocations as u64,
        deallocations: s.deallocations as u64,
        reallocations: s.reallocations as u64,
        allocated_bytes: s.bytes_allocated as u64,
        freed_bytes: s.bytes_deallocated as u64,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn not_installed_gives_none() {
        // The unit tests run on the system allocator.
        assert_eq!(super::stats(), None);
    }
}
