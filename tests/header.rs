//! The committed C header is exactly what the pinned cbindgen generates from src/ffi/, and
//! its version macros agree with Cargo.toml and the library at run time.
//! `FLATOPT_BLESS=1 cargo test --test header` (or `make header`) rewrites it.

use std::ffi::CStr;
use std::path::Path;

fn version_macros() -> String {
    let (major, minor, patch) = (
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    );
    let number: u32 = major.parse::<u32>().unwrap() * 10000
        + minor.parse::<u32>().unwrap() * 100
        + patch.parse::<u32>().unwrap();
    format!(
        "\n/** Version of this header; compare with flatopt_version() / flatopt_version_number(). */\n\
         #define FLATOPT_VERSION_MAJOR {major}\n\
         #define FLATOPT_VERSION_MINOR {minor}\n\
         #define FLATOPT_VERSION_PATCH {patch}\n\
         #define FLATOPT_VERSION_NUMBER {number}\n\
         #define FLATOPT_VERSION_STRING \"{}\"\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn generate() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml"))
        .expect("cbindgen.toml parses");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(Path::new(dir).join("src/ffi/mod.rs"))
        .with_after_include(version_macros())
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("utf-8 header")
}

#[test]
fn committed_header_is_fresh() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/flatopt.h");
    let fresh = generate();
    if std::env::var_os("FLATOPT_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/flatopt.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/flatopt.h is stale: run `make header` and commit the result"
    );
}

#[test]
fn versions_agree() {
    let header = generate();
    let string = format!(
        "#define FLATOPT_VERSION_STRING \"{}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(header.contains(&string), "header lacks {string}");
    // SAFETY: flatopt_version returns a static NUL-terminated string.
    let runtime = unsafe { CStr::from_ptr(flatopt::ffi::flatopt_version()) };
    assert_eq!(runtime.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    let number = flatopt::ffi::flatopt_version_number();
    let want = format!("#define FLATOPT_VERSION_NUMBER {number}");
    assert!(header.contains(&want), "header lacks {want}");
}
