//! Compiles the C that computes float increments in C's long double, as
//! Redis does (see `src/resp/long_double.rs`).

fn main() {
    println!("cargo:rerun-if-changed=csrc/long_double.c");
    cc::Build::new().file("csrc/long_double.c").warnings(true).compile("mt_long_double");
}
