//! The `monotable` binary; see `monotable --help`.

/// mimalloc instead of the system allocator: the request path allocates
/// many small, short-lived buffers, which glibc malloc serves slowly and
/// fragments under a steady write load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    monotable_node::cli::main()
}
