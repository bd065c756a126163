//! Polars parses a framed chunk into string columns; nothing is inferred or coerced.
//!
//! Every column is read as a string so that no bad value is silently turned
//! into a null: the rule engine checks each one and reports it by line.

use std::io::Cursor;
use std::sync::Arc;

use polars::prelude::*;

use super::rules::Fields;

/// A chunk's columns, by their index in the header; `None` where not read.
pub struct ParsedChunk {
    columns: Vec<Option<StringChunked>>,
    rows: usize,
}

impl ParsedChunk {
    pub fn rows(&self) -> usize {
        self.rows
    }
}

impl Fields for ParsedChunk {
    fn column(&self, column: usize, rows: std::ops::Range<usize>) -> Vec<Option<&str>> {
        let strings = self.columns[column].as_ref().expect("the rules read only projected columns");
        strings.iter().skip(rows.start).take(rows.len()).collect()
    }
}

/// Parse `data` (whole records, UTF-8, no header) into string columns: those
/// whose header indices are in `projection` (ascending), the others are
/// skipped (dropped columns cost Polars no copies). Unless `quoted`, `data`
/// holds no quote character at all and Polars does not look for quoting.
/// The error is Polars' own; callers must not show it to users verbatim, as
/// it may quote the data.
pub fn parse_chunk(
    data: &[u8],
    header: &[String],
    delimiter: u8,
    projection: &[usize],
    quoted: bool,
) -> PolarsResult<ParsedChunk> {
    let schema: Schema = header.iter().map(|h| Field::new(h.as_str().into(), DataType::String)).collect();
    let df = CsvReadOptions::default()
        .with_has_header(false)
        .with_schema(Some(Arc::new(schema)))
        .with_projection(Some(Arc::new(projection.to_vec())))
        // Polars parses a chunk in parts; they are read in order as they are,
        // not copied into one array first.
        .with_rechunk(false)
        .with_parse_options(
            CsvParseOptions::default()
                .with_separator(delimiter)
                .with_quote_char(quoted.then_some(b'"'))
                .with_missing_is_null(true)
                .with_encoding(CsvEncoding::Utf8),
        )
        .into_reader_with_file_handle(Cursor::new(data))
        .finish()?;
    let rows = df.height();
    let mut columns = vec![None; header.len()];
    for (&i, col) in projection.iter().zip(df.columns()) {
        columns[i] = Some(col.str()?.clone());
    }
    Ok(ParsedChunk { columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_stay_strings() {
        let data = b"1;\"a;\"\"b\"\"\nc\";007\n2;;x\n".to_vec();
        let header = vec!["n".to_owned(), "t".to_owned(), "z".to_owned()];
        let p = parse_chunk(&data, &header, b';', &[0, 1, 2], true).unwrap();
        assert_eq!(p.rows(), 2);
        assert_eq!(p.column(1, 0..2), [Some("a;\"b\"\nc"), None]);
        assert_eq!(p.column(2, 0..1), [Some("007")]);
        let p = parse_chunk(&data, &header, b';', &[0, 2], true).unwrap();
        assert_eq!(p.column(0, 1..2), [Some("2")]);
        assert_eq!(p.column(2, 0..2), [Some("007"), Some("x")]);
        assert!(p.columns[1].is_none());
    }

    #[test]
    fn quote_free_chunks_parse_alike_without_quoting() {
        let data = b"1;a b;007\n2;;x\n".to_vec();
        let header = vec!["n".to_owned(), "t".to_owned(), "z".to_owned()];
        let quoting = parse_chunk(&data, &header, b';', &[0, 1, 2], true).unwrap();
        let plain = parse_chunk(&data, &header, b';', &[0, 1, 2], false).unwrap();
        for c in 0..3 {
            assert_eq!(plain.column(c, 0..2), quoting.column(c, 0..2));
        }
        assert_eq!(plain.column(1, 0..2), [Some("a b"), None]);
    }
}
