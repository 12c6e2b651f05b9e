//! The records of an import source, read in bounded memory. A reader that keeps a whole
//! record (the csv crate's reader, `read_until` of a line) holds as much of the source as the
//! record runs: one unclosed quote makes the rest of a CSV file a single record, and a file
//! without newlines is a single NDJSON line. These readers keep at most [`MAX_ROW_BYTES`] of a
//! record and read past the rest, so such a file costs one rejected row, never its size in
//! memory.

use std::io::{self, BufRead};

use csv_core::ReadRecordResult;

use crate::table::MAX_ROW_BYTES;

/// Most columns a CSV record may have.
pub(super) const MAX_COLUMNS: usize = 1024;

/// Why a record was read past rather than kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// Its fields hold more than [`MAX_ROW_BYTES`].
    Bytes,
    /// It has more than [`MAX_COLUMNS`] fields.
    Columns,
}

impl Cut {
    pub(super) fn reason(self) -> String {
        match self {
            Cut::Bytes => "is larger than 1 MiB".to_owned(),
            Cut::Columns => format!("has more than {MAX_COLUMNS} columns"),
        }
    }
}

/// Where a record lies in its source, and whether it was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    /// The line it starts on (1-based).
    pub(super) first_line: u64,
    /// The line it ends on.
    pub(super) last_line: u64,
    /// Set when it was read past: its fields are not kept.
    pub(super) cut: Option<Cut>,
}

/// CSV records (RFC 4180 as the csv crate reads it: quoted fields may hold commas, quotes and
/// newlines) from a buffered source.
pub(super) struct CsvRecords<R> {
    source: R,
    parser: csv_core::Reader,
    /// The record's field bytes, one after the other; at most [`MAX_ROW_BYTES`] + 1.
    bytes: Vec<u8>,
    /// Where each field ends in `bytes`; at most [`MAX_COLUMNS`].
    ends: Vec<usize>,
    /// Fields of the record last read that are kept (none when it was cut).
    fields: usize,
}

impl<R: BufRead> CsvRecords<R> {
    pub(super) fn new(source: R) -> Self {
        Self {
            source,
            parser: csv_core::Reader::new(),
            bytes: vec![0; 4096],
            ends: vec![0; 32],
            fields: 0,
        }
    }

    /// The line the next record starts on.
    pub(super) fn line(&self) -> u64 {
        self.parser.line()
    }

    /// Reads the next record; None at the end of the source.
    pub(super) fn read(&mut self) -> io::Result<Option<Span>> {
        self.skip_line_ends()?;
        let first_line = self.parser.line();
        let (mut written, mut ended, mut cut, mut newline) = (0, 0, None, false);
        self.fields = 0;
        loop {
            let input = self.source.fill_buf()?;
            let (result, read, out, ends) =
                self.parser
                    .read_record(input, &mut self.bytes[written..], &mut self.ends[ended..]);
            if read > 0 {
                newline = input[read - 1] == b'\n';
            }
            self.source.consume(read);
            written += out;
            ended += ends;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull if self.bytes.len() <= MAX_ROW_BYTES => {
                    let len = (self.bytes.len() * 2).min(MAX_ROW_BYTES + 1);
                    self.bytes.resize(len, 0);
                }
                ReadRecordResult::OutputFull => {
                    // Read past the rest: what is written from here on is dropped.
                    cut.get_or_insert(Cut::Bytes);
                    written = 0;
                }
                ReadRecordResult::OutputEndsFull if self.ends.len() < MAX_COLUMNS => {
                    let len = (self.ends.len() * 2).min(MAX_COLUMNS);
                    self.ends.resize(len, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    cut.get_or_insert(Cut::Columns);
                    ended = 0;
                }
                ReadRecordResult::Record => {
                    if written > MAX_ROW_BYTES {
                        cut.get_or_insert(Cut::Bytes);
                    }
                    if cut.is_none() {
                        self.fields = ended;
                    }
                    // A record ended by a newline has moved the line count past it.
                    let after = self.parser.line();
                    let last_line = if newline { after.saturating_sub(1) } else { after };
                    return Ok(Some(Span {
                        first_line,
                        last_line: last_line.max(first_line),
                        cut,
                    }));
                }
                ReadRecordResult::End => return Ok(None),
            }
        }
    }

    /// Reads past the line ends before a record, counting their lines: they belong to no
    /// record (empty lines are skipped, and a CRLF record ends at its CR), and the record's
    /// first line is its own.
    fn skip_line_ends(&mut self) -> io::Result<()> {
        loop {
            let input = self.source.fill_buf()?;
            let ends = input.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            let lines = input[..ends].iter().filter(|&&b| b == b'\n').count();
            let more = ends > 0 && ends == input.len();
            self.parser.set_line(self.parser.line() + lines as u64);
            self.source.consume(ends);
            if !more {
                return Ok(());
            }
        }
    }

    /// The fields of the record last read (none when it was cut).
    pub(super) fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends[..self.fields].iter().map(move |&end| {
            let field = &self.bytes[start..end];
            start = end;
            field
        })
    }

    /// Bytes held for a record, whatever records were read.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.bytes.capacity() + self.ends.capacity() * size_of::<usize>()
    }
}

/// Reads the next line of `source` into `line`, without its newline, keeping at most
/// [`MAX_ROW_BYTES`] + 1 bytes of it and reading past the rest. None at the end of the
/// source; otherwise whether the line was cut (longer than [`MAX_ROW_BYTES`]).
pub(super) fn read_line(source: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Option<bool>> {
    line.clear();
    let mut any = false;
    loop {
        let input = source.fill_buf()?;
        if input.is_empty() {
            return Ok(any.then_some(line.len() > MAX_ROW_BYTES));
        }
        any = true;
        let newline = input.iter().position(|&b| b == b'\n');
        let text = &input[..newline.unwrap_or(input.len())];
        let room = (MAX_ROW_BYTES + 1).saturating_sub(line.len());
        line.extend_from_slice(&text[..text.len().min(room)]);
        let used = newline.map_or(input.len(), |n| n + 1);
        source.consume(used);
        if newline.is_some() {
            return Ok(Some(line.len() > MAX_ROW_BYTES));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Cursor};

    use super::*;

    fn records(data: &[u8]) -> Vec<(Span, Vec<String>)> {
        let mut reader = CsvRecords::new(Cursor::new(data.to_vec()));
        let mut out = Vec::new();
        while let Some(span) = reader.read().expect("read") {
            let fields = reader
                .fields()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            out.push((span, fields));
        }
        out
    }

    fn span(first_line: u64, last_line: u64, cut: Option<Cut>) -> Span {
        Span {
            first_line,
            last_line,
            cut,
        }
    }

    #[test]
    fn reads_fields_and_lines_as_csv_does() {
        let read = records(b"a,b\n\"x, \"\"y\"\"\",z\n\"two\nlines\",w\nlast,row");
        let expected = [
            (span(1, 1, None), vec!["a", "b"]),
            (span(2, 2, None), vec!["x, \"y\"", "z"]),
            (span(3, 4, None), vec!["two\nlines", "w"]),
            (span(5, 5, None), vec!["last", "row"]),
        ];
        assert_eq!(read.len(), expected.len(), "{read:?}");
        for ((span, fields), (want_span, want_fields)) in read.iter().zip(&expected) {
            assert_eq!(span, want_span);
            assert_eq!(fields, want_fields);
        }
        let crlf = records(b"a,b\r\nc,d\r\n\r\n\ne,\"f\r\ng\"\r\n");
        let spans: Vec<Span> = crlf.iter().map(|(span, _)| *span).collect();
        assert_eq!(
            spans,
            [span(1, 1, None), span(2, 2, None), span(5, 6, None)],
            "{crlf:?}"
        );
        assert_eq!(crlf[2].1, ["e", "f\r\ng"]);
    }

    /// A huge field costs a rejected row and the next record is read; an unclosed quote runs
    /// to the end of the source as one record; neither is held in memory.
    #[test]
    fn a_record_past_the_limit_is_read_past_not_held() {
        let mut data = b"a,b\n".to_vec();
        data.extend_from_slice(format!("big,{}\n", "x".repeat(10 * MAX_ROW_BYTES)).as_bytes());
        data.extend_from_slice(b"after,big\n");
        data.extend_from_slice(b"open,\"quote\n");
        for n in 0..400_000 {
            data.extend_from_slice(format!("r{n},swallowed\n").as_bytes());
        }
        let mut reader = CsvRecords::new(BufReader::new(Cursor::new(data)));
        let mut spans = Vec::new();
        let mut fields = Vec::new();
        while let Some(span) = reader.read().expect("read") {
            spans.push(span);
            fields.push(reader.fields().count());
            assert!(reader.held() < 2 * MAX_ROW_BYTES + 64 * 1024, "held {}", reader.held());
        }
        assert_eq!(
            spans,
            [
                span(1, 1, None),
                span(2, 2, Some(Cut::Bytes)),
                span(3, 3, None),
                span(4, 400_004, Some(Cut::Bytes)),
            ]
        );
        assert_eq!(fields, [2, 0, 2, 0]);
    }

    #[test]
    fn too_many_columns_are_read_past() {
        let mut data = b"a\n".to_vec();
        data.extend_from_slice(",".repeat(5 * MAX_COLUMNS).as_bytes());
        data.extend_from_slice(b"\nb\n");
        let read = records(&data);
        assert_eq!(read[1], (span(2, 2, Some(Cut::Columns)), Vec::new()));
        assert_eq!(read[2], (span(3, 3, None), vec!["b".to_owned()]));
    }

    #[test]
    fn a_line_past_the_limit_is_read_past_not_held() {
        let mut data = b"{\"a\":1}\n".to_vec();
        data.extend_from_slice(&vec![b'x'; 5 * MAX_ROW_BYTES]);
        data.extend_from_slice(b"\n{\"b\":2}");
        let mut source = BufReader::new(Cursor::new(data));
        let mut line = Vec::new();
        assert_eq!(read_line(&mut source, &mut line).expect("read"), Some(false));
        assert_eq!(line, b"{\"a\":1}");
        assert_eq!(read_line(&mut source, &mut line).expect("read"), Some(true));
        assert!(
            line.capacity() < 2 * MAX_ROW_BYTES + 64 * 1024,
            "held {}",
            line.capacity()
        );
        assert_eq!(read_line(&mut source, &mut line).expect("read"), Some(false));
        assert_eq!(line, b"{\"b\":2}", "the last line needs no newline");
        assert_eq!(read_line(&mut source, &mut line).expect("read"), None);
    }
}
