//! Compiles the C that reads and computes floats as Redis does: float
//! increments in C's long double (see `src/resp/long_double.rs`) and
//! float arguments read with strtod (see `src/resp/args.rs`).

fn main() {
    println!("cargo:rerun-if-changed=csrc/long_double.c");
    println!("cargo:rerun-if-changed=csrc/strtod.c");
    cc::Build::new()
        .file("csrc/long_double.c")
        .file("csrc/strtod.c")
        .warnings(true)
        .compile("mt_redis_floats");
}
