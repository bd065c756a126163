//! Links the release binary with packed relative relocations, and with the functions a query session and the nightly job run placed together.

fn main() {
    let env = |name: &str| std::env::var(name).ok();
    let linux_gnu =
        env("CARGO_CFG_TARGET_OS").as_deref() == Some("linux") && env("CARGO_CFG_TARGET_ENV").as_deref() == Some("gnu");
    // The debug builds of the tests are left as they are.
    if linux_gnu && env("PROFILE").as_deref() == Some("release") {
        // The same position-independent executable (ASLR kept), whose loader no longer reads a 7 MiB
        // relocation table at every start. Measured on `ladu sql`: peak resident memory of every query
        // 7 MiB lower (69 → 62 MiB for `SELECT 1`). glibc ≥ 2.36 and binutils ≥ 2.38 (Debian 12) know the format.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        // The kernel maps code 64 KiB around each page a process touches; the 12k functions of
        // `link/symbol-order.txt` (`link/collect.sh`), scattered over 135 MiB, made `SELECT 1` map
        // 56 MiB of it. Placed together: 72 → 28 MiB for `SELECT 1`, 86 → 42 MiB for a sum over 10M rows.
        // Rust ≥ 1.90 links x86-64 Linux with LLD, which reads the file (GNU ld does not:
        // `LADU_SYMBOL_ORDER=0` leaves it out).
        let order = std::path::Path::new(&env("CARGO_MANIFEST_DIR").unwrap_or_default()).join("link/symbol-order.txt");
        let lld = env("CARGO_CFG_TARGET_ARCH").as_deref() == Some("x86_64");
        if lld && env("LADU_SYMBOL_ORDER").as_deref() != Some("0") && order.is_file() {
            println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
            // Names of functions the code no longer has, or has under a new hash, are passed over.
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=LADU_SYMBOL_ORDER");
}
