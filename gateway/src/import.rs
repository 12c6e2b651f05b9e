//! Reading an import source (CSV or NDJSON) row by row, in constant memory, into import rows.
//! The REST routes and `crm import` use it, for contacts and for historical deals; it runs on a
//! blocking thread.

pub mod deals;
mod records;

use std::io::{BufRead, BufReader, Read};

use tokio::sync::{mpsc, oneshot};

use self::records::{CsvRecords, Cut, Span, read_line};

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

/// What an import reads: which columns a CSV header may have, and how a record (or an NDJSON
/// line) becomes a row of the import's request.
pub trait Schema: Sized {
    /// A row of the import's request.
    type Row: Send + 'static;

    /// Checks a CSV header row against the column mapping.
    fn from_header(headers: &[&str], mapping: &[(String, String)]) -> Result<Self, String>;
    /// Whether a column holds `field` (after mapping).
    fn holds(&self, field: &str) -> bool;
    /// How many columns the header has.
    fn width(&self) -> usize;
    /// The row of one CSV record of [`Schema::width`] fields.
    fn row(&self, line: i64, record: &[&str]) -> Self::Row;
    /// The row of one NDJSON line.
    fn ndjson(line: i64, text: &str) -> Self::Row;
    /// A row the client could not read.
    fn rejected(line: i64, field: &str, reason: String) -> Self::Row;

    /// Why a record of `len` fields does not fit the header, when it does not.
    fn width_mismatch(&self, len: usize) -> Option<String> {
        (len != self.width()).then(|| format!("has {len} columns; the header has {}", self.width()))
    }
}

/// A row as read: the import row, and the source text of the record (for a rejects file).
pub struct SourceRow<R> {
    pub row: R,
    pub raw: String,
}

/// Reads `source` and sends its rows to `rows`. The header (CSV) is checked first and the
/// verdict sent on `header` before any row: `Ok` with the header line, or why the file cannot
/// be imported. Rows that cannot be read become rejected rows; reading stops when the source
/// ends, breaks, or nobody takes rows any more.
pub fn read_rows<S: Schema>(
    source: impl Read,
    format: Format,
    mapping: &[(String, String)],
    header: oneshot::Sender<Result<Header, String>>,
    rows: mpsc::Sender<SourceRow<S::Row>>,
) {
    match format {
        Format::Csv => read_csv::<S>(source, mapping, header, &rows),
        Format::Ndjson => {
            let _ = header.send(Ok(Header {
                line: String::new(),
                external_ids: true,
            }));
            read_ndjson::<S>(source, &rows);
        }
    }
}

/// What the start of an import file says.
#[derive(Debug, Clone)]
pub struct Header {
    /// The header row as read (CSV; empty for NDJSON), for a rejects file.
    pub line: String,
    /// Whether rows may carry an external id (a CSV file with an `external_id` column; NDJSON
    /// rows each may).
    pub external_ids: bool,
}

impl Header {
    /// The natural key of an import that names none: the external id when the file has
    /// them, else the primary email (what a file without ids can match on).
    pub fn default_natural_key(&self) -> crm_proto::crm::contact::v1::NaturalKey {
        use crm_proto::crm::contact::v1::NaturalKey;
        if self.external_ids {
            NaturalKey::ExternalId
        } else {
            NaturalKey::PrimaryEmail
        }
    }
}

fn read_csv<S: Schema>(
    source: impl Read,
    mapping: &[(String, String)],
    header: oneshot::Sender<Result<Header, String>>,
    rows: &mpsc::Sender<SourceRow<S::Row>>,
) {
    let mut records = CsvRecords::new(BufReader::new(source));
    let columns = match records.read() {
        Ok(Some(Span { cut: Some(cut), .. })) => {
            let _ = header.send(Err(format!("the header row {}", cut.reason())));
            return;
        }
        Ok(Some(_)) => match records.fields().map(std::str::from_utf8).collect::<Result<Vec<_>, _>>() {
            Ok(names) => names.into_iter().map(str::to_owned).collect::<Vec<_>>(),
            Err(_) => {
                let _ = header.send(Err("the header row is not valid UTF-8".to_owned()));
                return;
            }
        },
        Ok(None) => {
            let _ = header.send(Err("the file is empty".to_owned()));
            return;
        }
        Err(err) => {
            let _ = header.send(Err(format!("the header row cannot be read: {err}")));
            return;
        }
    };
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let row_reader = match S::from_header(&names, mapping) {
        Ok(reader) => reader,
        Err(reason) => {
            let _ = header.send(Err(reason));
            return;
        }
    };
    let _ = header.send(Ok(Header {
        line: encode_line(&names),
        external_ids: row_reader.holds("external_id"),
    }));
    loop {
        let row = match records.read() {
            Ok(None) => return,
            Ok(Some(span)) => csv_row(&row_reader, &records, span),
            Err(err) => {
                let _ = rows.blocking_send(unreadable::<S>(records.line(), &err));
                return;
            }
        };
        if rows.blocking_send(row).is_err() {
            return;
        }
    }
}

/// The import row of the CSV record last read, which lies at `span`.
fn csv_row<S: Schema, R: BufRead>(row_reader: &S, records: &CsvRecords<R>, span: Span) -> SourceRow<S::Row> {
    let line = i64::try_from(span.first_line).unwrap_or(i64::MAX);
    // A record over more lines than one holds a quoted field with newlines; when it does not
    // fit the header, the likeliest cause is a quote never closed, which swallows the rows
    // after it: say which lines it took.
    let lines = (span.last_line > span.first_line).then(|| {
        format!(
            " (the row runs from line {} to line {}: is a closing quote missing?)",
            span.first_line, span.last_line
        )
    });
    if let Some(cut) = span.cut {
        return SourceRow {
            row: S::rejected(line, "row", cut.reason() + lines.as_deref().unwrap_or_default()),
            raw: String::new(),
        };
    }
    let fields: Vec<String> = records
        .fields()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    let raw = encode_line(&fields);
    let row = if records.fields().any(|f| std::str::from_utf8(f).is_err()) {
        S::rejected(line, "row", "is not valid UTF-8".to_owned())
    } else {
        match (row_reader.width_mismatch(fields.len()), lines) {
            (Some(reason), lines) => S::rejected(line, "row", reason + lines.as_deref().unwrap_or_default()),
            (None, _) => row_reader.row(line, &fields),
        }
    };
    SourceRow { row, raw }
}

/// The last row of a source that broke (an aborted upload, a failed disk): the rows after it
/// were not read, and the summary must not look like the whole file's.
fn unreadable<S: Schema>(line: u64, err: &std::io::Error) -> SourceRow<S::Row> {
    tracing::warn!(error = %err, line, "import source unreadable");
    SourceRow {
        row: S::rejected(
            i64::try_from(line).unwrap_or(i64::MAX),
            "row",
            format!("could not be read ({err}); nothing after it was read"),
        ),
        raw: String::new(),
    }
}

fn read_ndjson<S: Schema>(source: impl Read, rows: &mpsc::Sender<SourceRow<S::Row>>) {
    let mut reader = BufReader::new(source);
    let mut buffer = Vec::new();
    let mut line: u64 = 0;
    loop {
        let cut = match read_line(&mut reader, &mut buffer) {
            Ok(None) => return,
            Ok(Some(cut)) => cut,
            Err(err) => {
                let _ = rows.blocking_send(unreadable::<S>(line + 1, &err));
                return;
            }
        };
        line += 1;
        let number = i64::try_from(line).unwrap_or(i64::MAX);
        let row = if cut {
            SourceRow {
                row: S::rejected(number, "row", Cut::Bytes.reason()),
                raw: String::new(),
            }
        } else {
            match std::str::from_utf8(&buffer) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => SourceRow {
                    row: S::ndjson(number, text.trim()),
                    raw: text.trim().to_owned(),
                },
                Err(_) => SourceRow {
                    row: S::rejected(number, "row", "is not valid UTF-8".to_owned()),
                    raw: String::from_utf8_lossy(&buffer).trim().to_owned(),
                },
            }
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

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// The rows `read_rows` sends for `source`, as (line, rejected field, reason).
    fn read(source: impl Read, format: Format) -> Vec<(i64, String, String)> {
        let (header_tx, header_rx) = oneshot::channel();
        let (rows_tx, mut rows_rx) = mpsc::channel(1024);
        read_rows::<crate::table::RowReader>(source, format, &[], header_tx, rows_tx);
        assert!(matches!(header_rx.blocking_recv(), Ok(Ok(_))), "the header is read");
        let mut rows = Vec::new();
        while let Ok(source) = rows_rx.try_recv() {
            rows.push((source.row.line, source.row.rejected_field, source.row.rejected_reason));
        }
        rows
    }

    #[test]
    fn an_unclosed_quote_is_one_rejected_row_that_names_the_lines_it_took() {
        let file = b"external_id,given_name,family_name\ne-1,Ada,L\ne-2,\"Bo,B\ne-3,Cy,C\ne-4,Di,D\n";
        let rows = read(Cursor::new(file.to_vec()), Format::Csv);
        assert_eq!(
            rows,
            [
                (2, String::new(), String::new()),
                (
                    3,
                    "row".to_owned(),
                    "has 2 columns; the header has 3 (the row runs from line 3 to line 5: is a closing quote missing?)"
                        .to_owned()
                ),
            ]
        );
    }

    /// A source that breaks after its first `good` bytes.
    struct Breaks {
        data: Cursor<Vec<u8>>,
        good: u64,
    }

    impl Read for Breaks {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.data.position() >= self.good {
                return Err(std::io::Error::other("connection reset"));
            }
            let room = usize::try_from(self.good - self.data.position()).unwrap_or(usize::MAX);
            let n = buf.len().min(room);
            self.data.read(&mut buf[..n])
        }
    }

    #[test]
    fn a_source_that_breaks_ends_with_a_rejected_row_not_a_clean_end() {
        let csv = b"external_id,given_name\ne-1,Ada\ne-2,Bo\n".to_vec();
        let good = csv.len() as u64;
        let mut broken = csv.clone();
        broken.extend_from_slice(b"e-3,Cy\n");
        let rows = read(
            Breaks {
                data: Cursor::new(broken),
                good,
            },
            Format::Csv,
        );
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(
            (rows[2].0, rows[2].2.as_str()),
            (4, "could not be read (connection reset); nothing after it was read")
        );

        let ndjson = b"{\"givenName\":\"Ada\"}\n{\"givenName\":\"Bo\"}\n".to_vec();
        let good = ndjson.len() as u64;
        let rows = read(
            Breaks {
                data: Cursor::new(ndjson),
                good,
            },
            Format::Ndjson,
        );
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!((rows[2].0, rows[2].1.as_str()), (3, "row"));
    }
}
