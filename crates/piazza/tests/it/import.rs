//! `piazza import` as an operator runs it: exit codes, the summary, bad
//! rows on stderr, and a data dir held by a running server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::process::Server;

fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(path)
}

fn import(data_dir: &Path, args: &[&str], files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_piazza"))
        .arg("import")
        .args(args)
        .args(files)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run piazza import")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_csv_import_is_summarised_and_served_afterwards() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stations = testdata("sensor-timeseries/arpat_stations_toscana.csv");
    let mapping = testdata("mappings/arpat-stations.toml");
    let output = import(dir.path(), &["csv"], &[&stations, Path::new("--mapping"), &mapping]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("37 created, 0 updated, 0 unchanged, 0 skipped, 0 rejected"),
        "{stdout}"
    );

    let again = import(dir.path(), &["csv"], &[&stations, Path::new("--mapping"), &mapping]);
    assert!(
        text(&again.stdout).contains("0 created, 0 updated, 37 unchanged"),
        "{}",
        text(&again.stdout)
    );

    // The server then serves what was imported; an import meanwhile is refused.
    let server = Server::start(dir.path());
    let url = server.url("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:ARPAT:IT1187A?options=keyValues");
    let entity: serde_json::Value = reqwest::get(url).await.expect("get").json().await.expect("json");
    assert_eq!(entity["https://smartdatamodels.org/name"], "LU-CAPANNORI");
    let refused = import(dir.path(), &["csv"], &[&stations, Path::new("--mapping"), &mapping]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("in use by a running piazza server: stop it"),
        "{stderr}"
    );
    assert!(server.terminate().success());
}

#[test]
fn a_bad_row_is_reported_and_strict_exits_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("stations.csv");
    let original = std::fs::read_to_string(testdata("sensor-timeseries/arpat_stations_toscana.csv")).expect("csv");
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let mut fields: Vec<&str> = lines[2].split(',').collect();
    fields[8] = "east";
    lines[2] = fields.join(",");
    std::fs::write(&csv, lines.join("\n") + "\n").expect("write");
    let mapping = testdata("mappings/arpat-stations.toml");
    let data = dir.path().join("data");

    let output = import(&data, &["csv"], &[&csv, Path::new("--mapping"), &mapping]);
    assert!(output.status.success(), "a bad row does not fail the import");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:3: ", csv.display())) && stderr.contains("st_x"),
        "{stderr}"
    );
    assert!(text(&output.stdout).contains("36 created, 0 updated, 0 unchanged, 0 skipped, 1 rejected"));

    let strict = import(&data, &["csv", "--strict"], &[&csv, Path::new("--mapping"), &mapping]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(text(&strict.stderr).contains("--strict"), "{}", text(&strict.stderr));
}
