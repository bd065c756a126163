//! Polars parses a framed chunk into string columns; nothing is inferred or coerced.
//!
//! Every column is read as a string so that no bad value is silently turned
//! into a null: the rule engine checks each one and reports it by line.

use std::io::Cursor;
use std::sync::Arc;

use polars::prelude::*;

use super::rules::Fields;

/// A chunk's columns, in header order.
pub struct ParsedChunk {
    columns: Vec<<StringType as PolarsDataType>::Array>,
    rows: usize,
}

impl ParsedChunk {
    pub fn rows(&self) -> usize {
        self.rows
    }
}

impl Fields for ParsedChunk {
    fn field(&self, column: usize, row: usize) -> Option<&str> {
        self.columns[column].get(row)
    }
}

/// Parse `data` (whole records, UTF-8, no header) into one string column per header name.
/// The error is Polars' own; callers must not show it to users verbatim, as
/// it may quote the data.
pub fn parse_chunk(data: Vec<u8>, header: &[String], delimiter: u8) -> PolarsResult<ParsedChunk> {
    let schema: Schema = header.iter().map(|h| Field::new(h.as_str().into(), DataType::String)).collect();
    let df = CsvReadOptions::default()
        .with_has_header(false)
        .with_schema(Some(Arc::new(schema)))
        .with_rechunk(true)
        .with_parse_options(
            CsvParseOptions::default()
                .with_separator(delimiter)
                .with_quote_char(Some(b'"'))
                .with_missing_is_null(true)
                .with_encoding(CsvEncoding::Utf8),
        )
        .into_reader_with_file_handle(Cursor::new(data))
        .finish()?;
    let rows = df.height();
    let mut columns = Vec::with_capacity(header.len());
    for col in df.columns() {
        // One chunk per column, so that a field is one array lookup.
        columns.push(col.str()?.rechunk().downcast_as_array().clone());
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
        let p = parse_chunk(data, &header, b';').unwrap();
        assert_eq!(p.rows(), 2);
        assert_eq!(p.field(1, 0), Some("a;\"b\"\nc"));
        assert_eq!(p.field(2, 0), Some("007"));
        assert_eq!(p.field(1, 1), None);
    }
}
