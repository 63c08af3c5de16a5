//! docs/api.md is the operator's list of error codes: every code the API can answer must be in its
//! table, with the status the code really answers with.

use api::ErrorCode;
use strum::IntoEnumIterator;

#[test]
fn docs_api_md_lists_every_error_code_with_its_status() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md");
    let docs = std::fs::read_to_string(path).expect("docs/api.md is readable");
    let mut missing = Vec::new();
    for code in ErrorCode::iter() {
        let cell = format!("| `{code}` |");
        let Some(row) = docs.lines().find(|line| line.starts_with(&cell)) else {
            missing.push(format!("{code}: no row"));
            continue;
        };
        let status = code.http_status().to_string();
        if !row.split('|').nth(2).is_some_and(|cell| cell.contains(&status)) {
            missing.push(format!("{code}: row does not give status {status}: {row}"));
        }
    }
    assert!(missing.is_empty(), "docs/api.md error table is out of date:\n{}", missing.join("\n"));
}
