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
    println!("cargo:rerun-if-changed=build.rs");
}
