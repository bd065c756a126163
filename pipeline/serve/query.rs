//! Statements over the wire: the simple and extended query protocols on a connection's [`Session`],
//! and the session commands clients send (`SET`, `SHOW`, `BEGIN`, `DISCARD ALL`, …).

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use futures::stream::{self, BoxStream};
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response};
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::response::EmptyQueryResponse;

use super::catalog;
use super::encode::{self, Encoder};
use super::wire::{Conn, Handlers};
use crate::pseudonym::isikukood::redact;
use crate::sql::script::{Item, Script};
use crate::sql::{self, Prepared, Session, Stop};

/// What `SHOW server_version` and the startup parameters say.
pub const SERVER_VERSION: &str = "16.6 (ladu)";

/// A statement as the extended protocol keeps it.
#[derive(Clone)]
pub enum Statement {
    /// A query, planned on a session of the warehouse version `version`.
    Sql { prepared: Arc<Prepared>, version: u64 },
    /// A session command, answered without the warehouse; `text` as the client sent it, for the audit.
    Command { command: Command, text: String },
}

/// Session commands the server answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Set {
        name: String,
        value: String,
    },
    /// `SET TRANSACTION …` and the like: accepted, nothing to change in a read-only session.
    Accept(&'static str),
    Show(String),
    Reset(Option<String>),
    Begin,
    Commit,
    Rollback,
    DiscardAll,
    Deallocate(Option<String>),
}

/// Parameters a client may `SET`, with their values before it does.
const PARAMETERS: [(&str, &str); 22] = [
    ("application_name", ""),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "on"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "0"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "off"),
    ("lc_messages", "C"),
    ("lock_timeout", "0"),
    ("max_identifier_length", "63"),
    ("search_path", "public"),
    ("server_encoding", "UTF8"),
    ("server_version", SERVER_VERSION),
    ("server_version_num", "160006"),
    ("standard_conforming_strings", "on"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
];

/// Parameters that only the server sets.
const FIXED: [&str; 8] = [
    "server_version",
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "max_identifier_length",
    "default_transaction_read_only",
    "standard_conforming_strings",
];

/// The session command `sql` is, if it is one.
pub fn command(sql: &str) -> Option<Command> {
    let text = sql.trim().trim_end_matches(';').trim();
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let first = *words.first()?;
    let unquote = |v: &str| v.trim().trim_matches('\'').trim_matches('"').to_owned();
    Some(match first {
        "begin" | "start" if first == "begin" || words.get(1) == Some(&"transaction") => Command::Begin,
        "commit" | "end" => Command::Commit,
        "rollback" | "abort" => Command::Rollback,
        "discard" if words.get(1) == Some(&"all") && words.len() == 2 => Command::DiscardAll,
        "deallocate" => {
            let name = words.iter().skip(1).find(|w| **w != "prepare")?;
            Command::Deallocate((*name != "all").then(|| unquote(name)))
        }
        "show" => Command::Show(match &words[1..] {
            ["transaction", "isolation", "level"] => "transaction_isolation".to_owned(),
            ["time", "zone"] => "timezone".to_owned(),
            [name] => name.to_string(),
            _ => return None,
        }),
        "reset" => Command::Reset(match &words[1..] {
            ["all"] => None,
            [name] => Some(name.to_string()),
            _ => return None,
        }),
        "set" => {
            let rest: Vec<&str> = words[1..].iter().copied().skip_while(|w| *w == "session" || *w == "local").collect();
            match rest.as_slice() {
                ["transaction", ..] | ["characteristics", ..] => Command::Accept("SET"),
                ["time", "zone", ..] => {
                    let at = text.to_ascii_lowercase().find("zone").map_or(text.len(), |i| i + 4);
                    Command::Set { name: "timezone".into(), value: unquote(&text[at..]) }
                }
                [name, "to" | "=", ..] => {
                    // The value as typed (its case kept), after `TO` or `=`.
                    let after_name = lower.find(name).map_or(0, |i| i + name.len());
                    let rest = text[after_name..].trim_start();
                    let value = rest.strip_prefix('=').or_else(|| rest.get(2..)).unwrap_or("");
                    Command::Set { name: name.to_string(), value: unquote(value) }
                }
                [assignment] if assignment.contains('=') => {
                    let (name, value) = text[text.find(|c: char| c.is_whitespace()).unwrap_or(0)..]
                        .trim()
                        .split_once('=')
                        .unwrap_or_default();
                    Command::Set { name: name.trim().to_ascii_lowercase(), value: unquote(value) }
                }
                _ => return None,
            }
        }
        _ => return None,
    })
}

fn error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

/// A statement's error as the client sees it: redacted, with PostgreSQL's SQLSTATE where one fits.
pub fn wire_error(e: &sql::Error) -> PgWireError {
    use datafusion::error::DataFusionError;
    let code = match e {
        sql::Error::Refused { .. } => "42501",
        sql::Error::NoData { .. } => "42P01",
        sql::Error::Stopped { stop: Stop::Timeout(_) | Stop::Cancel, .. } => "57014",
        sql::Error::Stopped { .. } => "57P01",
        sql::Error::Query { source, .. } => match source.find_root() {
            DataFusionError::SQL(..) => "42601",
            DataFusionError::Plan(m) if m.contains("not found") => "42P01",
            DataFusionError::SchemaError(..) => "42703",
            DataFusionError::Plan(..) => "42000",
            DataFusionError::ResourcesExhausted(..) => "53200",
            DataFusionError::NotImplemented(..) => "0A000",
            _ => "XX000",
        },
        _ => "XX000",
    };
    let message = match e {
        sql::Error::Stopped { stop: Stop::Cancel, .. } => "canceling statement due to user request".to_owned(),
        sql::Error::Stopped { stop: Stop::Timeout(d), .. } => {
            format!("canceling statement due to statement timeout (serve.statement_timeout, {} s)", d.as_secs())
        }
        other => other.to_string(),
    };
    error(code, redact(&message).into_owned())
}

impl Handlers {
    /// The connection's session, reopened first if a newer warehouse version was committed.
    async fn session(&self, conn: &Conn) -> PgWireResult<Arc<Session>> {
        let current = conn.session().ok_or_else(|| error("08P01", "not logged in".into()))?;
        let root = self.server.settings.paths.warehouse.clone();
        let newest = tokio::task::block_in_place(|| crate::warehouse::manifest::latest_version(&root))
            .map_err(|e| error("XX000", e.to_string()))?;
        if newest == current.warehouse_version() {
            return Ok(current);
        }
        let server = Arc::clone(&self.server);
        let role = conn.role().unwrap_or_default().to_owned();
        let fields = super::connection_fields(conn.id, conn.peer, conn.user());
        let opened = tokio::task::spawn_blocking(move || server.open_session(&role, fields))
            .await
            .map_err(|e| error("XX000", e.to_string()))?
            .map_err(|e| error("XX000", redact(&e.to_string()).into_owned()))?;
        let opened = Arc::new(opened);
        conn.replace_session(Arc::clone(&opened));
        Ok(opened)
    }

    /// Check and plan a statement: a catalog query in the connection's
    /// catalog context ([`catalog`]), anything else in its session.
    async fn prepare(&self, conn: &Conn, session: &Arc<Session>, text: &str) -> PgWireResult<Prepared> {
        let Some(parsed) = self.server.catalog.catalog_statement(text, session) else {
            return session.prepare(text).await.map_err(|e| wire_error(&e));
        };
        let version = session.warehouse_version();
        let cached = conn.catalog.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let ctx = match cached {
            Some((v, ctx)) if v == version => ctx,
            _ => {
                let user = conn.user().unwrap_or_default();
                let cap = self.server.settings.sql.max_value_bytes;
                let ctx = catalog::context(session, user, cap).await.map_err(|e| error("XX000", e.to_string()))?;
                *conn.catalog.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((version, ctx.clone()));
                ctx
            }
        };
        session.prepare_beside(&ctx, text, parsed).await.map_err(|e| wire_error(&e))
    }

    /// Answer a session command; the caller forgets what `DISCARD ALL` and `DEALLOCATE` name.
    fn command(&self, conn: &Conn, session: &Session, text: &str, command: Command) -> PgWireResult<Response> {
        let mut parameters = conn.parameters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcome = match &command {
            Command::Set { name, .. } if name.starts_with("datafusion.") => {
                Err(error("42501", format!("`{name}` is the server's to set")))
            }
            Command::Set { name, .. } | Command::Reset(Some(name)) if FIXED.contains(&name.as_str()) => {
                Err(error("55P02", format!("parameter \"{name}\" cannot be changed")))
            }
            Command::Set { name, value } if name == "client_encoding" && !value.eq_ignore_ascii_case("utf8") => {
                Err(error("22023", format!("client_encoding {value} is not supported; this server speaks UTF8")))
            }
            Command::Set { name, .. } | Command::Reset(Some(name)) | Command::Show(name)
                if name != "all" && !PARAMETERS.iter().any(|(p, _)| p == name) =>
            {
                Err(error("42704", format!("unrecognized configuration parameter \"{name}\"")))
            }
            Command::Set { name, value } => {
                parameters.insert(name.clone(), value.clone());
                Ok(Response::Execution(Tag::new("SET")))
            }
            Command::Accept(tag) => Ok(Response::Execution(Tag::new(tag))),
            Command::Reset(Some(name)) => {
                parameters.remove(name);
                Ok(Response::Execution(Tag::new("RESET")))
            }
            Command::Reset(None) => {
                parameters.clear();
                Ok(Response::Execution(Tag::new("RESET")))
            }
            Command::Show(name) if name == "all" => {
                let rows = PARAMETERS
                    .iter()
                    .map(|(p, default)| {
                        vec![p.to_string(), parameters.get(*p).cloned().unwrap_or_else(|| default.to_string())]
                    })
                    .collect();
                Ok(text_rows(&["name", "setting"], rows))
            }
            Command::Show(name) => {
                let default = PARAMETERS.iter().find(|(p, _)| p == name).map_or("", |(_, d)| d);
                let value = parameters.get(name).cloned().unwrap_or_else(|| default.to_owned());
                Ok(text_rows(&[name.as_str()], vec![vec![value]]))
            }
            Command::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Command::Commit => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            Command::Rollback => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
            Command::DiscardAll => {
                parameters.clear();
                Ok(Response::Execution(Tag::new("DISCARD ALL")))
            }
            Command::Deallocate(_) => Ok(Response::Execution(Tag::new("DEALLOCATE"))),
        };
        drop(parameters);
        let problem = outcome.as_ref().err().map(|e| e.to_string());
        let audited = tokio::task::block_in_place(|| {
            session.audit_command(text, if problem.is_some() { "error" } else { "ok" }, problem.as_deref())
        });
        audited.map_err(|e| error("XX000", e.to_string()))?;
        outcome
    }

    /// The rows of a query, started when the client first asks for them.
    fn rows(
        &self,
        conn: &Conn,
        session: Arc<Session>,
        prepared: Arc<Prepared>,
        parameters: Vec<datafusion::scalar::ScalarValue>,
        shown: Vec<String>,
        fields: Arc<Vec<FieldInfo>>,
    ) -> Response {
        conn.statements.fetch_add(1, Ordering::Relaxed);
        let serve = &self.server.settings.serve;
        let (max_rows, max_bytes) = (serve.max_result_rows, serve.max_result_bytes);
        let described = Arc::clone(&fields);
        let started = stream::once(async move {
            let running = session.start(&prepared, parameters, &shown).await;
            // The session lives as long as its statement's rows.
            (running, session)
        });
        let rows = started
            .map(move |(running, session)| -> BoxStream<'static, PgWireResult<DataRow>> {
                let running = match running {
                    Ok(r) => r,
                    Err(e) => return stream::iter([Err(wire_error(&e))]).boxed(),
                };
                let (mut rows_sent, mut bytes_sent) = (0u64, 0u64);
                let encoder = Encoder::new(Arc::clone(&described));
                running
                    .batches
                    .map(move |batch| -> Vec<PgWireResult<DataRow>> {
                        let _keep = &session;
                        let encoded = batch.map_err(|e| wire_error(&e)).and_then(|b| {
                            encoder.rows(&b).map_err(|e| error("XX000", redact(&e.to_string()).into_owned()))
                        });
                        let (mut rows, bytes) = match encoded {
                            Ok(r) => r,
                            Err(e) => return vec![Err(e)],
                        };
                        // The rows within the limits are sent; then the error.
                        let mut over = None;
                        if let Some(max) = max_rows.filter(|m| rows_sent + rows.len() as u64 > *m) {
                            rows.truncate(max.saturating_sub(rows_sent) as usize);
                            over = Some(format!("the result has more than {max} rows (serve.max_result_rows)"));
                        }
                        if let Some(max) = max_bytes.filter(|m| bytes_sent + bytes > *m) {
                            let mut kept = 0;
                            rows.retain(|r| {
                                kept += r.data.len() as u64 + 7;
                                bytes_sent + kept <= max
                            });
                            over = Some(format!("the result is larger than {max} bytes (serve.max_result_bytes)"));
                        }
                        rows_sent += rows.len() as u64;
                        bytes_sent += bytes;
                        let mut out: Vec<PgWireResult<DataRow>> = rows.into_iter().map(Ok).collect();
                        out.extend(over.map(|m| Err(error("54000", m))));
                        out
                    })
                    .flat_map(stream::iter)
                    .boxed()
            })
            .flatten();
        Response::Query(QueryResponse::new(fields, rows))
    }
}

/// What `DISCARD ALL` and `DEALLOCATE` remove from the connection's statements and portals.
fn forget<S: PortalStore>(store: &S, c: &Command) {
    match c {
        Command::DiscardAll => store.clear_portals(),
        Command::Deallocate(Some(name)) => store.rm_statement(name),
        _ => {}
    }
}

/// A result of text columns, for `SHOW`.
fn text_rows(names: &[&str], rows: Vec<Vec<String>>) -> Response {
    let fields: Vec<FieldInfo> =
        names.iter().map(|n| FieldInfo::new((*n).to_owned(), None, None, Type::TEXT, FieldFormat::Text)).collect();
    let rows: Vec<PgWireResult<DataRow>> = rows
        .into_iter()
        .map(|row| {
            let mut buf = BytesMut::new();
            for value in &row {
                buf.put_i32(value.len() as i32);
                buf.put_slice(value.as_bytes());
            }
            Ok(DataRow::new(buf, row.len() as i16))
        })
        .collect();
    let mut response = QueryResponse::new(Arc::new(fields), stream::iter(rows));
    response.set_command_tag("SHOW");
    Response::Query(response)
}

#[async_trait]
impl SimpleQueryHandler for Handlers {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = Conn::of(client)?;
        let mut statements = Vec::new();
        let mut script = Script::new();
        for line in query.lines() {
            statements.extend(script.line(line));
        }
        statements.extend(script.finish());
        let mut responses = Vec::new();
        for item in statements {
            let text = match item {
                Item::Statement(s) | Item::Command(s) => s,
            };
            let session = self.session(&conn).await?;
            let response = match command(&text) {
                Some(c) => {
                    forget(client.portal_store(), &c);
                    self.command(&conn, &session, &text, c)
                }
                None => match self.prepare(&conn, &session, &text).await {
                    Ok(prepared) => {
                        let fields = Arc::new(encode::fields(&prepared.schema(), |_| FieldFormat::Text));
                        Ok(self.rows(&conn, session, Arc::new(prepared), Vec::new(), Vec::new(), fields))
                    }
                    Err(e) => Err(e),
                },
            };
            match response {
                Ok(r) => responses.push(r),
                Err(e) => {
                    // As PostgreSQL does: the statements after a failing one are not run.
                    responses.push(Response::Error(Box::new(ErrorInfo::from(e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// Plans statements for the extended protocol on the connection's session.
pub struct Parser {
    handlers: Arc<Handlers>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Statement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if let Some(c) = command(sql) {
            return Ok(Some(Statement::Command { command: c, text: sql.to_owned() }));
        }
        let conn = Conn::of(client)?;
        let session = self.handlers.session(&conn).await?;
        let prepared = self.handlers.prepare(&conn, &session, sql).await?;
        Ok(Some(Statement::Sql { prepared: Arc::new(prepared), version: session.warehouse_version() }))
    }

    fn get_parameter_types(&self, statement: &Statement) -> PgWireResult<Vec<Type>> {
        Ok(match statement {
            Statement::Sql { prepared, .. } => {
                prepared.parameter_types().iter().map(|t| t.as_ref().map_or(Type::UNKNOWN, encode::pg_type)).collect()
            }
            Statement::Command { .. } => Vec::new(),
        })
    }

    fn get_result_schema(&self, statement: &Statement, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        let format = |i: usize| format.map_or(FieldFormat::Text, |f| f.format_for(i));
        Ok(match statement {
            Statement::Sql { prepared, .. } => encode::fields(&prepared.schema(), format),
            Statement::Command { command: Command::Show(name), .. } => {
                vec![FieldInfo::new(name.clone(), None, None, Type::TEXT, FieldFormat::Text)]
            }
            Statement::Command { .. } => Vec::new(),
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handlers {
    type Statement = Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::new(Parser { handlers: Arc::new(Handlers { server: Arc::clone(&self.server) }) })
    }

    /// An `Execute` without a row limit streams its rows to the client as they
    /// come (pgwire's own would gather the whole result first); with a limit,
    /// and for a portal already suspended, pgwire's (which holds at most that
    /// many rows).
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(p)) if message.max_rows <= 0 => p,
            _ => return self._on_execute(client, message).await,
        };
        if !matches!(*portal.state().lock().await, PortalExecutionState::Initial) {
            return self._on_execute(client, message).await;
        }
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let mut status = client.transaction_status();
        let response = ExtendedQueryHandler::do_query(self, client, &portal, 0).await;
        *portal.state().lock().await = PortalExecutionState::Finished;
        let sent = match response {
            Err(e) => Err(e),
            Ok(Response::Query(results)) => send_query_response(client, results, false).await,
            Ok(Response::EmptyQuery) => client
                .feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new()))
                .await
                .map_err(PgWireError::from),
            Ok(Response::Execution(tag)) => send_execution_response(client, tag).await,
            Ok(Response::TransactionStart(tag)) => {
                status = status.to_in_transaction_state();
                send_execution_response(client, tag).await
            }
            Ok(Response::TransactionEnd(tag)) => {
                status = status.to_idle_state();
                send_execution_response(client, tag).await
            }
            Ok(Response::Error(e)) => {
                status = status.to_error_state();
                client.feed(PgWireBackendMessage::ErrorResponse((*e).into())).await.map_err(PgWireError::from)
            }
            Ok(_) => Err(error("0A000", "COPY is not offered".into())),
        };
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        sent
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Statement>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = Conn::of(client)?;
        let session = self.session(&conn).await?;
        let stored = &portal.statement;
        let (prepared, version) = match &stored.statement {
            Statement::Command { command, text } => {
                forget(client.portal_store(), command);
                return self.command(&conn, &session, text, command.clone());
            }
            Statement::Sql { prepared, version } => (Arc::clone(prepared), *version),
        };
        // Planned on an older warehouse version: planned again on the newest (a catalog statement in its context).
        let prepared = if version == session.warehouse_version() {
            prepared
        } else {
            Arc::new(self.prepare(&conn, &session, prepared.statement()).await?)
        };
        let expected = prepared.parameter_types();
        if portal.parameters.len() != expected.len() {
            return Err(error(
                "08P01",
                format!("the statement takes {} parameter(s); {} were bound", expected.len(), portal.parameters.len()),
            ));
        }
        let mut values = Vec::with_capacity(expected.len());
        let mut shown = Vec::with_capacity(expected.len());
        for (i, bytes) in portal.parameters.iter().enumerate() {
            let binary = portal.parameter_format.is_binary(i);
            let declared = stored.parameter_types.get(i).cloned().flatten();
            let value = encode::parameter(i + 1, bytes.as_deref(), binary, declared.as_ref(), expected[i].as_ref())
                .map_err(|e| error("22P02", redact(&e.to_string()).into_owned()))?;
            shown.push(value.to_string());
            values.push(value);
        }
        let format = &portal.result_column_format;
        let fields = Arc::new(encode::fields(&prepared.schema(), |i| format.format_for(i)));
        Ok(self.rows(&conn, session, prepared, values, shown, fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_commands_are_recognised() {
        assert_eq!(command("BEGIN"), Some(Command::Begin));
        assert_eq!(command("start transaction read only;"), Some(Command::Begin));
        assert_eq!(command("COMMIT"), Some(Command::Commit));
        assert_eq!(
            command("SET application_name = 'My App'"),
            Some(Command::Set { name: "application_name".into(), value: "My App".into() })
        );
        assert_eq!(
            command("set SESSION DateStyle TO ISO"),
            Some(Command::Set { name: "datestyle".into(), value: "ISO".into() })
        );
        assert_eq!(
            command("SET TIME ZONE 'Europe/Tallinn'"),
            Some(Command::Set { name: "timezone".into(), value: "Europe/Tallinn".into() })
        );
        assert_eq!(command("SHOW TRANSACTION ISOLATION LEVEL"), Some(Command::Show("transaction_isolation".into())));
        assert_eq!(command("show search_path"), Some(Command::Show("search_path".into())));
        assert_eq!(command("DISCARD ALL"), Some(Command::DiscardAll));
        assert_eq!(command("DEALLOCATE PREPARE s1"), Some(Command::Deallocate(Some("s1".into()))));
        assert_eq!(command("SELECT 1"), None);
        assert_eq!(command("settle"), None);
    }
}
