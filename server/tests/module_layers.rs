//! The server's modules are layered: `src/lib.rs` lists them top to bottom, and a module may
//! use (by a `crate::` path) only modules listed below it, so there is no import cycle. This
//! test reads the list and every source file, and names each path that points up the list.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// The module names of the layout list in `lib.rs`, top first.
fn layers(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|line| line.strip_prefix("//! - [`"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| name.to_owned()))
        .collect()
}

/// The top-level modules a file names through `crate::`, comments left out.
fn uses(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((
                path.display().to_string(),
                fs::read_to_string(&path).unwrap(),
            ));
        }
    }
}

#[test]
fn modules_only_use_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = layers(&fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(order.len() > 10, "the layout list in lib.rs: {order:?}");
    let rank = |name: &str| order.iter().position(|m| m == name);
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    for (path, text) in &files {
        let relative = path.strip_prefix(&format!("{}/", src.display())).unwrap();
        let module = relative
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = rank(&module) else {
            problems.push(format!(
                "{relative}: module `{module}` is not in lib.rs's layout"
            ));
            continue;
        };
        for used in uses(text) {
            if used == module {
                continue;
            }
            match rank(&used) {
                Some(below) if below > own => {}
                Some(_) => problems.push(format!(
                    "{relative}: `{module}` uses `{used}`, listed above it"
                )),
                None => problems.push(format!("{relative}: uses `{used}`, not in the layout")),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}
