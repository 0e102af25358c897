//! docs/ARCHITECTURE.md's crate map is the code's: every workspace crate has a row, and
//! each row's "may depend on" is exactly the crate's `[dependencies]` on cmesh crates (dev
//! dependencies of tests are free). A new edge between crates needs the map changed too.

use std::collections::BTreeSet;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One row of the crate table: crate, path, and the short names it may depend on.
struct Row {
    krate: String,
    path: String,
    may_use: BTreeSet<String>,
}

fn rows() -> Vec<Row> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    let section = doc
        .split("## Crates")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Crates section");
    section
        .lines()
        .filter(|line| line.starts_with("| `cmesh"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "a crate row has four cells: {line}");
            let unquote = |cell: &str| cell.split('`').nth(1).unwrap_or(cell).to_string();
            let may_use = match cells[3] {
                "nothing of ours" => BTreeSet::new(),
                list => list.split(',').map(|name| name.trim().to_string()).collect(),
            };
            Row {
                krate: unquote(cells[0]),
                path: unquote(cells[1]),
                may_use,
            }
        })
        .collect()
}

/// The cmesh crates in the `[dependencies]` section of `manifest`, short names.
fn cmesh_dependencies(manifest: &str) -> BTreeSet<String> {
    let Some(section) = manifest.split("\n[dependencies]\n").nth(1) else {
        return BTreeSet::new();
    };
    let section = section.split("\n[").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|line| line.trim().strip_prefix("cmesh-"))
        .filter_map(|rest| rest.split(['.', ' ', '=']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_crate_map_is_the_code() {
    let rows = rows();
    let workspace = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).expect("Cargo.toml");
    let members: Vec<&str> = workspace
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("workspace members")
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .collect();
    let mapped: BTreeSet<&str> = rows.iter().map(|r| r.path.as_str()).collect();
    for member in &members {
        assert!(
            mapped.contains(member),
            "workspace member {member} has no row in the crate map"
        );
    }
    assert!(mapped.contains("."), "the binary's row");
    for row in &rows {
        let dir = if row.path == "." {
            ROOT.to_string()
        } else {
            format!("{ROOT}/{}", row.path)
        };
        let manifest =
            std::fs::read_to_string(Path::new(&dir).join("Cargo.toml")).unwrap_or_else(|e| panic!("{}: {e}", row.path));
        assert!(
            manifest.contains(&format!("name = \"{}\"", row.krate)),
            "{} is not the crate at {}",
            row.krate,
            row.path
        );
        assert_eq!(
            cmesh_dependencies(&manifest),
            row.may_use,
            "{} depends on other cmesh crates than its row in docs/ARCHITECTURE.md says",
            row.krate
        );
    }
}
