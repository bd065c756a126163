//! Running scripts and the interactive shell: statements, `\d`, `\d TABLE`, `\q`.

use std::io::BufRead;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use super::script::{Item, Script};
use super::{Error, Output, Result, Session};
use crate::pseudonym::isikukood::redact;

/// What the shell says to `\?`.
pub const HELP: &str = "\
  SQL statements end with `;` and may span lines.
  \\d          list the tables and views you can read
  \\d NAME     list the columns of a table or view
  \\q          quit (or Ctrl-D)
  \\?          this help";

/// Run a whole script; the first failing statement stops it.
pub fn run_text(session: &Session, text: &str, out: &mut Output) -> Result<()> {
    run_lines(session, text.as_bytes(), out)
}

/// Run statements as they arrive on `input` (a script, or stdin that is not a terminal).
pub fn run_lines(session: &Session, input: impl BufRead, out: &mut Output) -> Result<()> {
    let mut script = Script::new();
    for line in input.lines() {
        let line = line.map_err(|e| Error::Engine(format!("cannot read SQL from standard input: {e}")))?;
        for item in script.line(&line) {
            if !run_item(session, &item, out)? {
                return Ok(());
            }
        }
    }
    match script.finish() {
        Some(item) => run_item(session, &item, out).map(drop),
        None => Ok(()),
    }
}

/// The interactive shell: line editing, in-memory history, errors shown and the session kept.
pub fn interactive(session: &Session, out: &mut Output) -> Result<()> {
    use rustyline::error::ReadlineError;
    let mut editor =
        rustyline::DefaultEditor::new().map_err(|e| Error::Engine(format!("cannot start line editing: {e}")))?;
    // After the editor, which takes SIGINT for itself: Ctrl-C stops a running statement.
    session.stop_on_signals()?;
    eprintln!(
        "ladu sql: role {}, warehouse version {}. End statements with `;`; \\? for help, \\q to quit.",
        session.role().name,
        session.warehouse_version()
    );
    let mut script = Script::new();
    loop {
        let prompt = if script.in_statement() { "ladu-> " } else { "ladu=> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                script = Script::new();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::Engine(format!("cannot read a line: {e}"))),
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        for item in script.line(&line) {
            match run_item(session, &item, out) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                // SIGTERM ends the shell; Ctrl-C only the statement, back to the prompt.
                Err(e @ Error::Stopped { stop: super::Stop::Terminate, .. }) => return Err(e),
                Err(e) => eprintln!("error: {}", redact(&e.to_string())),
            }
        }
    }
    Ok(())
}

/// Run one item; `Ok(false)` means quit.
fn run_item(session: &Session, item: &Item, out: &mut Output) -> Result<bool> {
    match item {
        Item::Statement(sql) => session.run(sql, out).map(|_| true),
        Item::Command(c) => {
            let mut words = c.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("\\q"), None, _) => Ok(false),
                (Some("\\?"), None, _) => {
                    eprintln!("{HELP}");
                    Ok(true)
                }
                (Some("\\d"), None, _) => list_tables(session, out).map(|_| true),
                (Some("\\d"), Some(name), None) => list_columns(session, name, out).map(|_| true),
                _ => Err(Error::Command {
                    command: c.clone(),
                    message: format!("unknown command; the commands are:\n{HELP}"),
                }),
            }
        }
    }
}

fn list_tables(session: &Session, out: &mut Output) -> Result<()> {
    let (mut names, mut kinds, mut descriptions) = (Vec::new(), Vec::new(), Vec::new());
    for (name, kind, description) in session.catalog() {
        names.push(name.to_owned());
        kinds.push(kind.as_str());
        descriptions.push(description.to_owned());
    }
    write(
        out,
        &[("name", names), ("kind", kinds.into_iter().map(str::to_owned).collect()), ("description", descriptions)],
    )
}

fn list_columns(session: &Session, name: &str, out: &mut Output) -> Result<()> {
    let schema = session.columns(name).ok_or_else(|| Error::Command {
        command: format!("\\d {name}"),
        message: format!("no table or view `{name}` that role {} can read; `\\d` lists them", session.role().name),
    })?;
    let fields = schema.fields();
    write(
        out,
        &[
            ("column", fields.iter().map(|f| f.name().clone()).collect()),
            ("type", fields.iter().map(|f| f.data_type().to_string()).collect()),
            ("nullable", fields.iter().map(|f| if f.is_nullable() { "yes" } else { "no" }.to_owned()).collect()),
        ],
    )
}

fn write(out: &mut Output, columns: &[(&str, Vec<String>)]) -> Result<()> {
    let schema =
        Arc::new(Schema::new(columns.iter().map(|(n, _)| Field::new(*n, DataType::Utf8, false)).collect::<Vec<_>>()));
    let arrays = columns.iter().map(|(_, v)| Arc::new(StringArray::from(v.clone())) as _).collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays).expect("columns of equal length");
    let mut w = out.begin(schema)?;
    w.write(&batch)?;
    w.finish()?;
    Ok(())
}
