//! The `ownlist` binary: parses the command line and runs it (`app::cli`).

use std::process::ExitCode;

/// jemalloc rather than glibc's allocator: sending a broadcast allocates and frees buffers of
/// a few kilobytes per message on several threads, where glibc spent a quarter of the runtime's
/// CPU (consolidating free chunks, locking arenas); jemalloc cut ownlist's CPU per message by
/// about a tenth on the delivery benchmark, with the same peak memory (mimalloc: the same gain,
/// twice the memory). It also takes the C code's `malloc` and `free` (SQLite's allocations), a
/// further ~4%.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    ownlist::app::cli::main()
}
