//! Query results as a table for people, CSV, JSON lines or Parquet, to stdout or a file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;

/// Rows the `table` format prints of one result; the rest are counted, not shown.
pub const TABLE_ROWS_SHOWN: usize = 10_000;

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for reading, with a row count.
    Table,
    /// RFC 4180 with a header line, one block per statement.
    Csv,
    /// One JSON object per row (JSON lines).
    Json,
    /// One Parquet file; needs `--output` and a single result.
    Parquet,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write results to {target}: {source}")]
    Io {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write results to {target}: {source}")]
    Arrow {
        target: String,
        #[source]
        source: ArrowError,
    },
    #[error("cannot write Parquet to {target}: {source}")]
    Parquet {
        target: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("--format parquet writes a file: give --output PATH")]
    ParquetNeedsFile,
    #[error("--format parquet holds one result, but the statements return several; run them one at a time")]
    ParquetOneResult,
}

/// Where results go.
pub struct Output {
    format: Format,
    path: Option<PathBuf>,
    /// Replace an existing file at `path`.
    force: bool,
    /// Opened at the first result, so a statement that fails leaves no empty file.
    sink: Option<Box<dyn Write>>,
    results: usize,
}

impl Output {
    /// Results in `format` to `path` (a new file unless `force`), or to stdout.
    pub fn new(format: Format, path: Option<&Path>, force: bool) -> Result<Output, Error> {
        if format == Format::Parquet && path.is_none() {
            return Err(Error::ParquetNeedsFile);
        }
        Ok(Output { format, path: path.map(Path::to_owned), force, sink: None, results: 0 })
    }

    /// The output file, opened new (or replaced, with `force`), or an existing device.
    fn open(&self, path: &Path) -> std::io::Result<File> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true);
        // A device or a pipe (`/dev/null`, a FIFO) is written to as it is; nothing is replaced.
        let device = std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir());
        if self.force {
            options.create(true).truncate(true);
        } else if !device {
            options.create_new(true);
        }
        options.open(path)
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn target(&self) -> String {
        self.path.as_ref().map_or_else(|| "standard output".into(), |p| p.display().to_string())
    }

    /// Start the next statement's result.
    pub fn begin(&mut self, schema: SchemaRef) -> Result<ResultWriter<'_>, Error> {
        self.results += 1;
        let target = self.target();
        let io = |source| Error::Io { target: target.clone(), source };
        if self.format == Format::Parquet {
            if self.results > 1 {
                return Err(Error::ParquetOneResult);
            }
            let path = self.path.as_ref().ok_or(Error::ParquetNeedsFile)?;
            let file = self.open(path).map_err(io)?;
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .build();
            let writer = parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))
                .map_err(|source| Error::Parquet { target: target.clone(), source })?;
            return Ok(ResultWriter { target, rows: 0, kind: Kind::Parquet(writer) });
        }
        if self.sink.is_none() {
            self.sink = Some(match &self.path {
                None => Box::new(BufWriter::new(std::io::stdout())),
                Some(p) => Box::new(BufWriter::new(self.open(p).map_err(io)?)),
            });
        }
        let out = self.sink.as_mut().expect("opened above");
        let kind = match self.format {
            Format::Table => Kind::Table { out, schema, batches: Vec::new(), shown: 0 },
            Format::Csv => Kind::Csv(arrow::csv::WriterBuilder::new().with_header(true).build(out)),
            Format::Json => Kind::Json(arrow::json::LineDelimitedWriter::new(out)),
            Format::Parquet => unreachable!("handled above"),
        };
        Ok(ResultWriter { target, rows: 0, kind })
    }
}

/// Writes one statement's result.
pub struct ResultWriter<'a> {
    target: String,
    rows: u64,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Table { out: &'a mut Box<dyn Write>, schema: SchemaRef, batches: Vec<RecordBatch>, shown: usize },
    Csv(arrow::csv::Writer<&'a mut Box<dyn Write>>),
    Json(arrow::json::LineDelimitedWriter<&'a mut Box<dyn Write>>),
    Parquet(parquet::arrow::ArrowWriter<File>),
}

impl ResultWriter<'_> {
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.rows += batch.num_rows() as u64;
        let arrow = |source| Error::Arrow { target: self.target.clone(), source };
        match &mut self.kind {
            Kind::Table { batches, shown, .. } => {
                let take = batch.num_rows().min(TABLE_ROWS_SHOWN - *shown);
                if take > 0 {
                    batches.push(batch.slice(0, take));
                    *shown += take;
                }
                Ok(())
            }
            Kind::Csv(w) => w.write(batch).map_err(arrow),
            Kind::Json(w) => w.write(batch).map_err(arrow),
            Kind::Parquet(w) => w.write(batch).map_err(|source| Error::Parquet { target: self.target.clone(), source }),
        }
    }

    /// Finish the result; returns the number of rows it had.
    pub fn finish(self) -> Result<u64, Error> {
        let target = self.target;
        let io = |source| Error::Io { target: target.clone(), source };
        match self.kind {
            Kind::Table { out, schema, batches, shown } => {
                let table = arrow::util::pretty::pretty_format_batches_with_schema(schema, &batches)
                    .map_err(|source| Error::Arrow { target: target.clone(), source })?;
                writeln!(out, "{table}").map_err(io)?;
                let rows = self.rows;
                match rows as usize - shown {
                    0 => writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" }),
                    more => writeln!(out, "({rows} rows; the last {more} not shown: use --format csv or --output)"),
                }
                .map_err(io)?;
                out.flush().map_err(io)?;
            }
            Kind::Csv(w) => w.into_inner().flush().map_err(io)?,
            Kind::Json(mut w) => {
                w.finish().map_err(|source| Error::Arrow { target: target.clone(), source })?;
                w.into_inner().flush().map_err(io)?;
            }
            Kind::Parquet(w) => {
                w.close().map_err(|source| Error::Parquet { target: target.clone(), source })?;
            }
        }
        Ok(self.rows)
    }
}
