//! The committed C header is exactly what the pinned cbindgen generates from src/ffi/ (plus the
//! version macros and the `FLATOPT_..._INIT` macros generated here from the library's
//! defaults), and its version macros agree with Cargo.toml and the library at run time.
//! `FLATOPT_BLESS=1 cargo test --test header` (or `make header`) rewrites it.

mod common;

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

fn cbindgen(after_include: &str) -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml"))
        .expect("cbindgen.toml parses");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(Path::new(dir).join("src/ffi/mod.rs"))
        .with_after_include(after_include)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("utf-8 header")
}

/// The header: cbindgen's output with the version macros and the `FLATOPT_..._INIT` macros,
/// which are generated from the defaults the library's `_init` functions write, field by
/// field in the layout cbindgen emitted (a first pass), so that they cannot drift apart.
fn generate() -> String {
    let first = cbindgen(&version_macros());
    let macros = init_macros(&first);
    cbindgen(&format!("{}{macros}", version_macros()))
}

/// One field of a C struct as cbindgen wrote it: (C type, name).
fn struct_fields(header: &str, name: &str) -> Vec<(String, String)> {
    let open = format!("typedef struct {name} {{");
    let start = header
        .find(&open)
        .unwrap_or_else(|| panic!("{name} in the header"))
        + open.len();
    let end = start + header[start..].find(&format!("}} {name};")).unwrap();
    header[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(';') && !l.starts_with(['*', '/']))
        .map(|l| {
            let l = l.trim_end_matches(';');
            let at = l.rfind([' ', '*']).unwrap() + 1;
            (l[..at].trim().to_string(), l[at..].to_string())
        })
        .collect()
}

/// Size (= alignment on the 64-bit targets the library supports) of a field's C type.
fn c_size(ty: &str) -> usize {
    match ty {
        "uint32_t" | "float" => 4,
        "uint64_t" | "double" | "size_t" => 8,
        t if t.ends_with('*') => 8,
        t => panic!("INIT macros: unknown field type {t}"),
    }
}

/// The C expression of a field's default value read from `bytes` at `off`.
fn c_value(ty: &str, bytes: &[u8], off: usize) -> String {
    let word = |n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&bytes[off..off + n]);
        u64::from_ne_bytes(b)
    };
    match ty {
        "uint32_t" => format!("(uint32_t){}", word(4)),
        "uint64_t" => format!("(uint64_t){}", word(8)),
        "size_t" => format!("(size_t){}", word(8)),
        "float" => format!("{:?}f", f32::from_bits(word(4) as u32)),
        "double" => {
            let x = f64::from_bits(word(8));
            if x.is_nan() {
                "NAN".to_string()
            } else {
                format!("{x:?}")
            }
        }
        _ => {
            assert_eq!(word(8), 0, "INIT macros: a non-NULL default pointer");
            "NULL".to_string()
        }
    }
}

type Init = fn(*mut u8, usize, u32);

/// `#define NAME(kind)`-style macro for a struct whose defaults depend on its `kind` (or a
/// plain `#define NAME` when `kinds` is 0..1 and `param` is None).
fn init_macro(
    header: &str,
    ty: &str,
    macro_name: &str,
    param: Option<&str>,
    kinds: u32,
    init: Init,
) -> String {
    let fields = struct_fields(header, ty);
    let mut off = 0usize;
    let mut rows = Vec::new();
    let defaults: Vec<Vec<u8>> = (0..kinds)
        .map(|k| {
            let mut buf = vec![0u8; 4096];
            init(buf.as_mut_ptr(), 4096, k);
            buf
        })
        .collect();
    for (cty, name) in &fields {
        let size = c_size(cty);
        off = off.next_multiple_of(size);
        let values: Vec<String> = defaults.iter().map(|b| c_value(cty, b, off)).collect();
        let expr = if name == "struct_size" {
            format!("(uint32_t)sizeof({ty})")
        } else if let (Some(p), "kind") = (param, name.as_str()) {
            format!("(uint32_t)({p})")
        } else if values.iter().all(|v| *v == values[0]) {
            values[0].clone()
        } else {
            // The most common value is the fallback; the others by kind, grouped by value.
            let common = values
                .iter()
                .max_by_key(|v| values.iter().filter(|w| w == v).count())
                .unwrap();
            let p = param.unwrap();
            let mut e = String::from("(");
            let mut seen: Vec<&String> = Vec::new();
            for v in values.iter().filter(|v| *v != common) {
                if seen.contains(&v) {
                    continue;
                }
                seen.push(v);
                let kinds: Vec<String> = (0..values.len())
                    .filter(|&k| values[k] == *v)
                    .map(|k| format!("({p}) == {k}"))
                    .collect();
                e += &format!("{} ? {v} : ", kinds.join(" || "));
            }
            e + common + ")"
        };
        rows.push(format!("    {expr}, /* {name} */"));
        off += size;
    }
    let head = match param {
        Some(p) => format!("#define {macro_name}({p}) {{"),
        None => format!("#define {macro_name} {{"),
    };
    let mut out = vec![head];
    out.extend(rows);
    out.push("}".to_string());
    let last = out.len() - 1;
    let body: Vec<String> = out
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == last {
                l.clone()
            } else {
                format!("{l} \\")
            }
        })
        .collect();
    body.join("\n") + "\n"
}

fn init_macros(header: &str) -> String {
    use flatopt::ffi::*;
    // SAFETY (each closure): `p` has 4096 writable bytes, as many as `size` says.
    let base: Init = |p, size, kind| unsafe {
        assert_eq!(
            flatopt_base_params_init(p.cast(), size, kind),
            flatopt_status::FLATOPT_OK
        );
    };
    let schedule: Init = |p, size, kind| unsafe {
        assert_eq!(
            flatopt_schedule_init(p.cast(), size, kind),
            flatopt_status::FLATOPT_OK
        );
    };
    let config: Init = |p, size, _| unsafe {
        assert_eq!(
            flatopt_config_init(p.cast(), size),
            flatopt_status::FLATOPT_OK
        );
    };
    let args: Init = |p, size, _| unsafe {
        assert_eq!(
            flatopt_step_args_init(p.cast(), size),
            flatopt_status::FLATOPT_OK
        );
    };
    let group: Init = |p, size, _| unsafe {
        assert_eq!(
            flatopt_group_options_init(p.cast(), size),
            flatopt_status::FLATOPT_OK
        );
    };
    let param: Init = |p, size, _| unsafe {
        assert_eq!(
            flatopt_param_options_init(p.cast(), size),
            flatopt_status::FLATOPT_OK
        );
    };
    let scaler: Init = |p, size, _| unsafe {
        assert_eq!(
            flatopt_loss_scaler_options_init(p.cast(), size),
            flatopt_status::FLATOPT_OK
        );
    };
    // Every kind of the catalogs (dense from 0: tests/catalog.rs checks that).
    let n_base = flatopt::config::base_specs().len() as u32;
    let n_sched = flatopt::schedule::specs().len() as u32;
    format!(
        "\n/**\n * Initializers with the defaults of the `_init` functions, for C99 and C++ (e.g.\n \
         * `flatopt_config c = FLATOPT_CONFIG_INIT;`), generated from the library's defaults.\n \
         * `kind` must be a valid kind. NAN (math.h) marks \"no value\" where a field says so.\n */\n\
         {}{}{}{}{}{}{}",
        init_macro(header, "flatopt_base_params", "FLATOPT_BASE_PARAMS_INIT", Some("kind"), n_base, base),
        init_macro(header, "flatopt_schedule", "FLATOPT_SCHEDULE_INIT", Some("kind"), n_sched, schedule),
        init_macro(header, "flatopt_config", "FLATOPT_CONFIG_INIT", None, 1, config),
        init_macro(header, "flatopt_step_args", "FLATOPT_STEP_ARGS_INIT", None, 1, args),
        init_macro(header, "flatopt_group_options", "FLATOPT_GROUP_OPTIONS_INIT", None, 1, group),
        init_macro(header, "flatopt_param_options", "FLATOPT_PARAM_OPTIONS_INIT", None, 1, param),
        init_macro(header, "flatopt_loss_scaler_options", "FLATOPT_LOSS_SCALER_OPTIONS_INIT", None, 1, scaler),
    )
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

/// The enumerators of every `typedef enum` of the header: (enum name, [(enumerator, value)]).
fn c_enums(header: &str) -> Vec<(String, Vec<(String, i64)>)> {
    let mut out = Vec::new();
    let mut rest = header;
    while let Some(at) = rest.find("typedef enum ") {
        let tail = &rest[at + "typedef enum ".len()..];
        let name = tail.split_whitespace().next().unwrap().to_string();
        let body = &tail[tail.find('{').unwrap() + 1..tail.find('}').unwrap()];
        let values = body
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("FLATOPT_"))
            .map(|l| {
                let (k, v) = l.trim_end_matches(',').split_once(" = ").unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect();
        out.push((name, values));
        rest = &tail[tail.find('}').unwrap()..];
    }
    out
}

/// Every enumerator of the C enums the C++ binding mirrors as `enum class` has its member there
/// (`Name = FLATOPT_X,`), so a value added to the C header cannot go missing in C++. The status
/// codes are used as `flatopt_status` directly.
#[test]
fn cpp_enums_cover_the_c_enums() {
    // The C++ binding is in the repository, not in the published crate.
    let Some(hpp) = common::repository_file("bindings/cpp/flatopt.hpp") else {
        return;
    };
    let hpp = std::fs::read_to_string(hpp).unwrap();
    let header = generate();
    let mirrored = [
        ("flatopt_base_kind", "BaseKind"),
        ("flatopt_nonfinite", "NonFinite"),
        ("flatopt_simd_tier", "SimdTier"),
        ("flatopt_schedule_kind", "ScheduleKind"),
        ("flatopt_dtype", "Dtype"),
    ];
    let enums = c_enums(&header);
    let names: Vec<&str> = enums.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "flatopt_status",
            "flatopt_base_kind",
            "flatopt_schedule_kind",
            "flatopt_nonfinite",
            "flatopt_simd_tier",
            "flatopt_dtype",
            // Used as is by C++ (the config's fields are uint32_t) until it mirrors them.
            "flatopt_state_dtype",
            "flatopt_state_rounding"
        ],
        "a new C enum: mirror it in bindings/cpp/flatopt.hpp (or use it as is) and list it here"
    );
    for (c_name, cpp_name) in mirrored {
        let open = format!("enum class {cpp_name} : uint32_t {{");
        let at = hpp
            .find(&open)
            .unwrap_or_else(|| panic!("flatopt.hpp lacks {open}"));
        let body = &hpp[at..at + hpp[at..].find("};").unwrap()];
        let (_, values) = enums.iter().find(|(n, _)| n == c_name).unwrap();
        for (enumerator, _) in values {
            assert!(
                body.contains(&format!(" = {enumerator},")),
                "bindings/cpp/flatopt.hpp: enum class {cpp_name} has no member for {enumerator}"
            );
        }
        let members = body.matches(" = FLATOPT_").count();
        assert_eq!(
            members,
            values.len(),
            "enum class {cpp_name}: members beyond {c_name}'s"
        );
    }
}
