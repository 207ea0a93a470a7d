//! Gives the shared library a SONAME so that it installs like a C library:
//! `libflatopt.so.<major>` from 1.0 on, `libflatopt.so.0.<minor>` before (0.x minors may break
//! the ABI).

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").unwrap_or_else(|_| "0".into());
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" {
        let soname = if major == "0" {
            format!("libflatopt.so.0.{minor}")
        } else {
            format!("libflatopt.so.{major}")
        };
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
    // An unoptimized build (opt-level 0: a Rust dependent's default debug build compiles
    // flatopt so) gives each rule one loop copy that tests its switches instead of 2^(4+k)
    // specialized copies (`Vf32::SPECIALIZED`): without optimization the copies are not merged
    // and their stack slots are not shared, and every rule's copies are inlined into one
    // function per tier, whose stack frame reached 8.6 MB and overflowed a thread's stack on
    // the first step. Results are the same bits either way (tests/unoptimized.rs).
    println!("cargo:rustc-check-cfg=cfg(flatopt_unoptimized)");
    if std::env::var("OPT_LEVEL").as_deref() == Ok("0") {
        println!("cargo:rustc-cfg=flatopt_unoptimized");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
