//! The catalogs against everything that mirrors them outside Rust, so that no mirror can drift
//! silently:
//!
//! - `bindings/catalog.json`, the catalogs as data (every schedule and base rule with its kind
//!   number, name and fields: type, domain, f32 use, default, C field; the configuration's own
//!   fields), which the Python binding's tests compare its classes against
//!   (`bindings/python/tests/test_catalog_mirror.py`). Stale: this test fails;
//!   `FLATOPT_BLESS=1 cargo test --test catalog` rewrites it (as `make header` does the header).
//! - `include/flatopt.h`: every catalog kind is a constant of the C kind enums with its number,
//!   and nothing else is; every catalog field is a field of the C struct it names.
//! - `bindings/cpp/test/catalog_mirror.cpp` (generated here too, compiled by the C++ tests):
//!   `static_assert`s that the C++ enums have the catalog's numbers, and run-time checks of the
//!   C++ kind names.
//!
//! - The configuration catalog's C side: `flatopt_config_init` writes every field's default in
//!   the field's C form, and the `tier` choice lists the tiers by their C numbers.
//!
//! One test per catalog entry where a failure should name it.

mod common;

use std::path::PathBuf;

use flatopt::catalog::{self, Spec, Ty};
use flatopt::config::{base_specs, config_spec};
use flatopt::schedule;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compares `fresh` with the committed file (or rewrites it with `FLATOPT_BLESS=1`). The files
/// are the bindings' mirrors, in the repository but not in the published crate: skipped there.
fn check_generated(rel: &str, fresh: &str) {
    let path = root().join(rel);
    if std::env::var_os("FLATOPT_BLESS").is_some() {
        std::fs::write(&path, fresh).unwrap_or_else(|e| panic!("{rel}: {e}"));
        return;
    }
    if common::repository_file(rel).is_none() {
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{rel} is stale: run `FLATOPT_BLESS=1 cargo test --test catalog` and commit the result"
    );
}

fn catalog_json() -> String {
    format!(
        "{{\n  \"schedules\": {},\n  \"base_rules\": {},\n  \"config\": {}\n}}\n",
        catalog::json(schedule::specs()),
        catalog::json(base_specs()),
        catalog::json(std::slice::from_ref(config_spec())),
    )
}

#[test]
fn catalog_json_is_fresh() {
    let json = catalog_json();
    serde_json::from_str::<serde_json::Value>(&json).expect("the dump is valid JSON");
    check_generated("bindings/catalog.json", &json);
}

fn header() -> String {
    std::fs::read_to_string(root().join("include/flatopt.h")).expect("include/flatopt.h")
}

/// The constants of the C enum `name` in the header: (constant, value).
fn c_enum(header: &str, name: &str) -> Vec<(String, u32)> {
    let start = header
        .find(&format!("enum {name} {{"))
        .unwrap_or_else(|| panic!("enum {name} not in the header"));
    let body = &header[start..start + header[start..].find('}').expect("enum end")];
    body.lines()
        .filter_map(|l| {
            let l = l.trim().trim_end_matches(',');
            let (k, v) = l.split_once(" = ")?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The field names of the C struct `name` in the header.
fn c_struct_fields(header: &str, name: &str) -> Vec<String> {
    let start = header
        .find(&format!("typedef struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not in the header"));
    let body = &header[start..start + header[start..].find("} ").expect("struct end")];
    body.lines()
        .filter(|l| l.trim_end().ends_with(';') && !l.trim_start().starts_with('*'))
        .filter_map(|l| {
            let decl = l.trim().trim_end_matches(';');
            decl.rsplit([' ', '*']).next().map(str::to_string)
        })
        .collect()
}

/// The kinds of a catalog are exactly the constants of its C enum, named `prefix` + the
/// upper-case name.
fn check_kind_enum(specs: &[Spec], c_enum_name: &str, prefix: &str) {
    let mut want: Vec<(String, u32)> = specs
        .iter()
        .map(|s| (format!("{prefix}{}", s.name.to_uppercase()), s.kind))
        .collect();
    let mut got = c_enum(&header(), c_enum_name);
    want.sort();
    got.sort();
    assert_eq!(got, want, "enum {c_enum_name} vs the catalog");
}

#[test]
fn schedule_kinds_are_the_c_enum() {
    check_kind_enum(
        schedule::specs(),
        "flatopt_schedule_kind",
        "FLATOPT_SCHEDULE_",
    );
}

#[test]
fn base_kinds_are_the_c_enum() {
    check_kind_enum(base_specs(), "flatopt_base_kind", "FLATOPT_");
}

/// Every field of every entry is carried by a field of the C struct it names.
fn check_c_fields(specs: &[Spec], c_struct: &str) {
    let fields = c_struct_fields(&header(), c_struct);
    for s in specs {
        for f in &s.fields {
            assert!(
                fields.iter().any(|c| c == f.c),
                "{}.{}: C field {} is not in struct {c_struct} ({fields:?})",
                s.name,
                f.name,
                f.c
            );
            if matches!(f.ty, Ty::U64s | Ty::F64s) {
                let count = format!("n_{}", f.c);
                assert!(fields.contains(&count), "{}: no {count}", s.name);
            }
        }
    }
}

#[test]
fn schedule_fields_are_c_fields() {
    check_c_fields(schedule::specs(), "flatopt_schedule");
}

#[test]
fn base_fields_are_c_fields() {
    check_c_fields(base_specs(), "flatopt_base_params");
}

#[test]
fn config_fields_are_c_fields() {
    check_c_fields(std::slice::from_ref(config_spec()), "flatopt_config");
}

/// Kinds are 0, 1, 2, ... in table order (C arrays and checkpoints index by them), and every
/// entry's defaults are inside its own domains.
#[test]
fn kinds_are_dense_and_defaults_valid() {
    for specs in [schedule::specs(), base_specs()] {
        for (i, s) in specs.iter().enumerate() {
            assert_eq!(s.kind as usize, i, "{}", s.name);
        }
    }
    for s in base_specs() {
        let b = flatopt::Base::default_of(s.kind);
        b.validate()
            .unwrap_or_else(|e| panic!("{}: defaults {e}", s.name));
    }
    for s in schedule::specs() {
        let sched = flatopt::Schedule::from_values(s.kind, s.defaults()).expect("defaults");
        match sched.validate() {
            Ok(()) => {}
            // The default lists are empty: one value short.
            Err(e) if s.name == "piecewise_constant" => assert!(e.to_string().contains("values")),
            Err(e) => panic!("{}: defaults {e}", s.name),
        }
    }
}

/// `lower_snake` as `UpperCamel`.
fn camel(s: &str) -> String {
    s.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// The C++ mirror check: the C++ enums (`ScheduleKind` named after the schedule names,
/// `BaseKind` after the Rust variants, the choice enums after their option names) have the
/// catalog's numbers, the C++ name functions give the catalog's names, and every base rule has
/// its `BaseParams` and `Config` factory (named after the rule, building its kind).
fn cpp_mirror() -> String {
    let mut asserts = Vec::new();
    let mut names = Vec::new();
    for s in schedule::specs() {
        asserts.push(format!(
            "static_assert(static_cast<uint32_t>(flatopt::ScheduleKind::{}) == {}, \"{}\");",
            camel(s.name),
            s.kind,
            s.name
        ));
        names.push(format!(
            "  ok &= same(flatopt::schedule_kind_name(flatopt::ScheduleKind::{}), \"{}\");",
            camel(s.name),
            s.name
        ));
        for f in &s.fields {
            if let Ty::Choice(options) = f.ty {
                let cpp_enum = match (s.name, f.name) {
                    ("one_cycle", "anneal") => "Anneal",
                    ("cyclic", "mode") => "CyclicMode",
                    ("reduce_on_plateau", "mode") => "PlateauMode",
                    ("reduce_on_plateau", "threshold_mode") => "ThresholdMode",
                    other => panic!("{other:?}: a new choice field needs its C++ enum named here"),
                };
                for (i, o) in options.iter().enumerate() {
                    asserts.push(format!(
                        "static_assert(static_cast<uint32_t>(flatopt::{cpp_enum}::{}) == {i}, \"{}.{}\");",
                        camel(o),
                        s.name,
                        f.name
                    ));
                }
            }
        }
    }
    for s in base_specs() {
        asserts.push(format!(
            "static_assert(static_cast<uint32_t>(flatopt::BaseKind::{}) == {}, \"{}\");",
            s.variant, s.kind, s.name
        ));
        names.push(format!(
            "  ok &= same(flatopt::base_kind_name(flatopt::BaseKind::{}), \"{}\");",
            s.variant, s.name
        ));
        // The rule's factories: `BaseParams::<name>()` and `Config::<name>(lr)` with their
        // defaults, of the rule's kind (a rule without them does not compile).
        for (class, args) in [("BaseParams", ""), ("Config", "1e-3")] {
            names.push(format!(
                "  ok &= same_kind(flatopt::{class}::{n}({args}){base}.kind(), \
                 flatopt::BaseKind::{v}, \"{class}::{n}\");",
                n = s.name,
                v = s.variant,
                base = if class == "Config" { ".base()" } else { "" },
            ));
        }
    }
    format!(
        "// Generated by tests/catalog.rs from the Rust catalogs: do not edit; run\n\
         // `FLATOPT_BLESS=1 cargo test --test catalog`. The C++ enums and kind names against the\n\
         // catalogs (compiled and run by bindings/cpp/test/run.sh).\n\
         #include <cstdint>\n#include <cstdio>\n#include <cstring>\n\n#include \"flatopt.hpp\"\n\n\
         {}\n\nstatic bool same(const char* got, const char* want) {{\n  \
         if (std::strcmp(got, want) == 0) return true;\n  \
         std::fprintf(stderr, \"catalog_mirror: %s, expected %s\\n\", got, want);\n  \
         return false;\n}}\n\n\
         static bool same_kind(flatopt::BaseKind got, flatopt::BaseKind want, const char* what) {{\n  \
         if (got == want) return true;\n  \
         std::fprintf(stderr, \"catalog_mirror: %s() builds kind %u, expected %u\\n\", what,\n               \
         static_cast<unsigned>(got), static_cast<unsigned>(want));\n  \
         return false;\n}}\n\nint main() {{\n  bool ok = true;\n{}\n  \
         if (ok) std::printf(\"catalog_mirror: %d names and factories match\\n\", {});\n  return ok ? 0 : 1;\n}}\n",
        asserts.join("\n"),
        names.join("\n"),
        names.len()
    )
}

#[test]
fn cpp_mirror_check_is_fresh() {
    check_generated("bindings/cpp/test/catalog_mirror.cpp", &cpp_mirror());
}

/// The configuration's `tier` choice is `default` then every tier by its number and name (the
/// index is the C `flatopt_simd_tier` value), and its C form names that enum.
#[test]
fn config_tier_choice_is_the_tier_list() {
    let f = config_spec()
        .field("tier")
        .expect("tier is a catalog field");
    let Ty::Choice(names) = f.ty else {
        panic!("tier: {:?}", f.ty)
    };
    let mut want = vec!["default"];
    want.extend(flatopt::Tier::ALL.iter().map(|t| t.name()));
    assert_eq!(names, &want[..]);
    for t in flatopt::Tier::ALL {
        assert_eq!(names[t as usize], t.name());
    }
    assert_eq!(
        f.c_form,
        catalog::CForm::Enum("must be a flatopt_simd_tier value")
    );
}

/// `flatopt_config_init` writes every configuration field's catalog default (read back through
/// the catalog's C reading, which also resolves the C forms: 0 for no clipping, the `uint32_t`
/// thread count, the tier's 0 for the default).
#[test]
fn c_config_defaults_are_the_catalog_defaults() {
    use flatopt::ffi::{flatopt_config, flatopt_config_init, flatopt_status::FLATOPT_OK};
    let mut c = std::mem::MaybeUninit::<flatopt_config>::zeroed();
    // SAFETY: `c` is a writable flatopt_config of the size given.
    let st = unsafe { flatopt_config_init(c.as_mut_ptr(), std::mem::size_of::<flatopt_config>()) };
    assert_eq!(st, FLATOPT_OK);
    // SAFETY: initialised by flatopt_config_init (all-zero before: every field valid).
    let mut c = unsafe { c.assume_init() };
    for f in &config_spec().fields {
        // SAFETY: the configuration catalog has no list fields.
        let v = unsafe { flatopt::ffi::catalog::read_field(&mut c, f) }
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(v, f.default, "{} (C field {})", f.name, f.c);
    }
}
