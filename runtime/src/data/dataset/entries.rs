//! Reading a dataset CSV into (file, split) entries.

use super::error::DatasetError;
use super::{DatasetSpec, Split};
use std::path::PathBuf;

/// One image of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetEntry {
    /// `data_dir / (id + suffix)`.
    pub path: PathBuf,
    pub split: Split,
    /// The 1-based line of the CSV row (for messages).
    pub line: u64,
}

/// Read `spec.csv`: every row's image id and split. A missing column, an unknown split value or
/// an empty id is an error naming the CSV (and line).
pub fn read_entries(spec: &DatasetSpec) -> Result<Vec<DatasetEntry>, DatasetError> {
    let path = &spec.csv;
    let csv_err = |msg: String| DatasetError::Csv {
        path: path.clone(),
        msg,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_path(path)
        .map_err(|e| csv_err(e.to_string()))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| csv_err(e.to_string()))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DatasetError::MissingColumn {
                path: path.clone(),
                column: name.to_string(),
                available: headers.clone(),
            })
    };
    let image_col = column(&spec.image_column)?;
    let split_col = column(&spec.split_column)?;

    let mut entries = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_err(e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        let id = record.get(image_col).unwrap_or("").trim();
        if id.is_empty() {
            return Err(DatasetError::EmptyId {
                path: path.clone(),
                line,
            });
        }
        let value = record.get(split_col).unwrap_or("");
        let split = Split::parse(value).ok_or_else(|| DatasetError::BadSplit {
            path: path.clone(),
            line,
            value: value.to_string(),
        })?;
        entries.push(DatasetEntry {
            path: spec.data_dir.join(format!("{id}{}", spec.suffix)),
            split,
            line,
        });
    }
    Ok(entries)
}
