//! `piazza import csv <file> --mapping <file.toml>`.

use std::collections::HashMap;
use std::path::Path;

use piazza_broker::Broker;
use serde_json::Value;

use crate::mapping::{Mapping, Row};
use crate::sink::Sink;
use crate::{display_name, mapping_context, ImportError, ImportResult, Options, Origin, Record, Rejection, Summary};

struct CsvRow<'a> {
    columns: &'a HashMap<String, usize>,
    record: &'a csv::StringRecord,
}

impl Row for CsvRow<'_> {
    fn get(&self, column: &str) -> Option<Value> {
        let index = *self.columns.get(column)?;
        self.record.get(index).map(|cell| Value::String(cell.to_owned()))
    }
}

/// Imports every row of a CSV file as the mapping says.
pub async fn import_csv(broker: &Broker, options: &Options, file: &Path, mapping: &Mapping) -> ImportResult<Summary> {
    let name = display_name(file);
    let context = mapping_context(broker, &options.tenant, mapping).await?;
    let delimiter = mapping.delimiter.unwrap_or(',');
    let delimiter = u8::try_from(delimiter).map_err(|_| ImportError::Mapping {
        path: mapping.base.clone(),
        reason: format!("delimiter '{delimiter}' is not a single-byte character"),
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_path(file)
        .map_err(|e| ImportError::Input(format!("{name}: {e}")))?;
    let columns = header(&mut reader, &name, mapping)?;
    // Read everything first: the progress bar then knows the total.
    let rows: Vec<Result<csv::StringRecord, csv::Error>> = reader.records().collect();
    let mut sink = Sink::new(broker, options, mapping.import_mode(), Some(rows.len() as u64));
    for (index, row) in rows.into_iter().enumerate() {
        // Header is line 1; a record's own position is exact even with quoted newlines.
        let fallback = index as u64 + 2;
        let record = match row {
            Ok(record) => record,
            Err(error) => {
                let line = error.position().map_or(fallback, |p| p.line());
                let rejection = Rejection {
                    origin: Origin::new(&name, line),
                    reason: format!("unreadable row: {error}"),
                };
                sink.push(Err(rejection)).await?;
                continue;
            }
        };
        let origin = Origin::new(&name, record.position().map_or(fallback, |p| p.line()));
        let row = CsvRow {
            columns: &columns,
            record: &record,
        };
        match mapping.entity(&row) {
            Ok(Some((body, observed_at))) => {
                let record = Record {
                    origin,
                    body,
                    context: context.clone(),
                    observed_at,
                };
                sink.push(Ok(record)).await?;
            }
            Ok(None) => sink.skip(),
            Err(reason) => sink.push(Err(Rejection { origin, reason })).await?,
        }
    }
    sink.finish().await
}

/// Column name → index; every column the mapping reads must be there.
fn header<R: std::io::Read>(
    reader: &mut csv::Reader<R>,
    name: &str,
    mapping: &Mapping,
) -> ImportResult<HashMap<String, usize>> {
    let headers = reader
        .headers()
        .map_err(|e| ImportError::Input(format!("{name}: no header row: {e}")))?;
    let columns: HashMap<String, usize> = headers
        .iter()
        .enumerate()
        // A UTF-8 byte order mark is not part of the first column's name.
        .map(|(i, h)| (h.trim_start_matches('\u{feff}').trim().to_owned(), i))
        .collect();
    let missing: Vec<String> = mapping
        .columns()
        .into_iter()
        .filter(|c| !columns.contains_key(c))
        .collect();
    if !missing.is_empty() {
        let mut have: Vec<&String> = columns.keys().collect();
        have.sort_by_key(|c| columns[*c]);
        let have: Vec<&str> = have.into_iter().map(String::as_str).collect();
        return Err(ImportError::Input(format!(
            "{name}: the mapping reads column(s) {} that the file does not have (it has: {})",
            missing.join(", "),
            have.join(", ")
        )));
    }
    Ok(columns)
}
