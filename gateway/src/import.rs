//! Reading an import source (CSV or NDJSON) row by row, in constant memory, into import rows.
//! The REST route and `crm import` both use it; it runs on a blocking thread.

use std::io::{BufRead, BufReader, Read};

use crm_proto::crm::contact::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use crate::dto::table::{MAX_ROW_BYTES, RowReader, ndjson_row, rejected};

/// File formats an import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    pub fn parse(raw: &str) -> Option<Format> {
        match raw {
            "csv" => Some(Format::Csv),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }
}

/// A row as read: the import row, and the source text of the record (for a rejects file).
pub struct SourceRow {
    pub row: pb::ImportRow,
    pub raw: String,
}

/// Reads `source` and sends its rows to `rows`. The header (CSV) is checked first and the
/// verdict sent on `header` before any row: `Ok` with the header line, or why the file cannot
/// be imported. Rows that cannot be read become rejected rows; reading stops when the source
/// ends, breaks, or nobody takes rows any more.
pub fn read_rows(
    source: impl Read,
    format: Format,
    mapping: &[(String, String)],
    header: oneshot::Sender<Result<String, String>>,
    rows: mpsc::Sender<SourceRow>,
) {
    match format {
        Format::Csv => read_csv(source, mapping, header, &rows),
        Format::Ndjson => {
            let _ = header.send(Ok(String::new()));
            read_ndjson(source, &rows);
        }
    }
}

fn read_csv(
    source: impl Read,
    mapping: &[(String, String)],
    header: oneshot::Sender<Result<String, String>>,
    rows: &mpsc::Sender<SourceRow>,
) {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_reader(source);
    let mut record = csv::ByteRecord::new();
    let columns = match reader.read_byte_record(&mut record) {
        Ok(true) => match std::str::from_utf8(record.as_slice()) {
            Ok(_) => record
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<Vec<_>>(),
            Err(_) => {
                let _ = header.send(Err("the header row is not valid UTF-8".to_owned()));
                return;
            }
        },
        Ok(false) => {
            let _ = header.send(Err("the file is empty".to_owned()));
            return;
        }
        Err(err) => {
            let _ = header.send(Err(format!("the header row cannot be read: {err}")));
            return;
        }
    };
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let row_reader = match RowReader::new(&names, mapping) {
        Ok(reader) => reader,
        Err(reason) => {
            let _ = header.send(Err(reason));
            return;
        }
    };
    let _ = header.send(Ok(encode_line(&names)));
    loop {
        let row = match reader.read_byte_record(&mut record) {
            Ok(false) => return,
            Ok(true) => {
                let line = record
                    .position()
                    .map_or(0, |p| i64::try_from(p.line()).unwrap_or(i64::MAX));
                let fields: Vec<String> = record.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
                let raw = encode_line(&fields.iter().map(String::as_str).collect::<Vec<_>>());
                let row = if record.as_slice().len() > MAX_ROW_BYTES {
                    rejected(line, "row", "is larger than 1 MiB")
                } else if record.iter().any(|f| std::str::from_utf8(f).is_err()) {
                    rejected(line, "row", "is not valid UTF-8")
                } else {
                    row_reader.row(line, &fields.iter().map(String::as_str).collect::<Vec<_>>())
                };
                SourceRow { row, raw }
            }
            Err(err) => {
                // The source itself broke (an aborted upload): nothing more can be read.
                tracing::warn!(error = %err, "import source unreadable");
                return;
            }
        };
        if rows.blocking_send(row).is_err() {
            return;
        }
    }
}

fn read_ndjson(source: impl Read, rows: &mpsc::Sender<SourceRow>) {
    let mut reader = BufReader::new(source);
    let mut buffer = Vec::new();
    let mut line: i64 = 0;
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "import source unreadable");
                return;
            }
        }
        line += 1;
        let text = match std::str::from_utf8(&buffer) {
            Ok(text) => text.trim(),
            Err(_) => {
                let row = SourceRow {
                    row: rejected(line, "row", "is not valid UTF-8"),
                    raw: String::from_utf8_lossy(&buffer).trim().to_owned(),
                };
                if rows.blocking_send(row).is_err() {
                    return;
                }
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        let row = SourceRow {
            row: ndjson_row(line, text),
            raw: text.to_owned(),
        };
        if rows.blocking_send(row).is_err() {
            return;
        }
    }
}

/// One CSV line (without the newline) of the given fields.
fn encode_line(fields: &[&str]) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = writer.write_record(fields);
    String::from_utf8_lossy(&writer.into_inner().unwrap_or_default())
        .trim_end_matches('\n')
        .to_owned()
}
