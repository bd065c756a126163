//! Links the release binary with packed relative relocations: the same position-independent executable (ASLR kept), whose loader no longer reads a 7 MiB relocation table at every start.

fn main() {
    // Measured on `ladu sql`: peak resident memory of every query 7 MiB lower (69 → 62 MiB for `SELECT 1`).
    // glibc ≥ 2.36 and binutils ≥ 2.38 (Debian 12) know the format; the debug builds of the tests are left as they are.
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu && std::env::var("PROFILE").as_deref() == Ok("release") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
