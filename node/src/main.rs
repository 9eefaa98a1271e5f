//! The `monotable` binary; see `monotable --help`.

fn main() {
    monotable_node::cli::main()
}
