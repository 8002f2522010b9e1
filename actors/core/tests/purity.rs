//! The core must stay pure: no I/O, clock, threads, OS randomness or
//! runtime, and no iteration-order surprises. The crate structure does most
//! of the work (it cannot name a crate it does not depend on); this test
//! keeps the dependency list and the sources honest.

use std::fs;
use std::path::Path;

/// The only crates the core may depend on: data, not effects.
const ALLOWED_DEPENDENCIES: &[&str] = &["serde", "bytes", "thiserror"];

/// Names that would bring effects or nondeterminism into the core.
const FORBIDDEN: &[&str] = &[
    "std::time",
    "Instant",
    "SystemTime",
    "std::thread",
    "std::fs",
    "std::net",
    "std::env",
    "std::io",
    "std::process",
    "HashMap",
    "HashSet",
    "RandomState",
    "tokio",
    "actix",
    "rand::",
    "getrandom",
    "unsafe",
];

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn core_depends_only_on_data_crates() {
    let manifest = fs::read_to_string(manifest_dir().join("Cargo.toml")).unwrap();
    let mut section = String::new();
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        // [dependencies] and any [target.*.dependencies]; dev-dependencies
        // never reach the library.
        let is_deps = section == "[dependencies]"
            || (section.starts_with("[target.") && section.ends_with(".dependencies]"));
        if is_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line
                .split(['=', '.', ' '])
                .next()
                .unwrap()
                .trim()
                .to_string();
            found.push(name);
        }
    }
    assert!(
        !found.is_empty(),
        "parser found no dependencies at all: fix this test"
    );
    for dep in &found {
        assert!(
            ALLOWED_DEPENDENCIES.contains(&dep.as_str()),
            "synod-core may not depend on `{dep}`: the core is pure (no I/O, clock, threads, \
             OS randomness, runtime). Put effects in synod-actors and feed the core inputs."
        );
    }
}

#[test]
fn core_sources_name_no_effects() {
    let mut checked = 0;
    for entry in fs::read_dir(manifest_dir().join("src")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap();
                for bad in FORBIDDEN {
                    assert!(
                        !code.contains(bad),
                        "{}:{}: `{bad}` in the pure core: {line}",
                        path.display(),
                        n + 1
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "expected the core's source files, found {checked}"
    );
}
