//! What PostgreSQL clients ask of `pg_catalog` (psql's `\d`, DBeaver's browsing, `version()`): answered over the role's tables without their rows.
//!
//! A statement that names a relation of `pg_catalog` (or a `pg_…` relation),
//! or calls a function only PostgreSQL's catalog has, is rewritten as
//! PostgreSQL clients need it (datafusion-pg-catalog's parser) and planned in
//! a context beside the connection's session: the tables and views this role
//! may read, as empty tables of the same columns, under the catalog tables of
//! datafusion-pg-catalog. The session's sandbox, audit, time limit and memory
//! pool hold for it as for any statement; no row of the warehouse is in reach.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::DataType;
use async_trait::async_trait;
use datafusion::datasource::empty::EmptyTable;
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Statement as SqlStatement, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use super::query::SERVER_VERSION;
use crate::sql::{Session, limits, sandbox};

/// The database clients connect to, as `\l` and `current_database()` name it.
pub const DATABASE: &str = "ladu";

/// Who owns every table, as `\d` shows it.
const OWNER: &str = "ladu";

/// The array functions that clients' catalog queries use; no other array function is offered.
const ARRAY_FUNCTIONS: [&str; 10] = [
    "array_to_string",
    "array_length",
    "cardinality",
    "array_has",
    "array_has_any",
    "array_has_all",
    "array_position",
    "array_element",
    "make_array",
    "string_to_array",
];

/// Functions that only the catalog context has: a statement calling one is a catalog statement.
const CATALOG_FUNCTIONS: [&str; 13] = [
    "version",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_user",
    "session_user",
    "has_table_privilege",
    "has_schema_privilege",
    "has_database_privilege",
    "has_any_column_privilege",
    "format_type",
    "quote_ident",
    "parse_ident",
];

/// Parses statements as PostgreSQL clients write their catalog queries.
pub struct Parser {
    inner: PostgresCompatibilityParser,
}

impl Parser {
    pub fn new() -> Parser {
        Parser { inner: PostgresCompatibilityParser::new() }
    }

    /// `sql` parsed and rewritten for the catalog context, if it is one
    /// statement for the catalog; `None` for every other statement, which the
    /// session plans as `ladu sql` would.
    pub fn catalog_statement(&self, sql: &str, session: &Session) -> Option<DfStatement> {
        // Most statements name nothing of the catalog: spare them both parses. A
        // catalog statement names `pg_…`, a catalog function, or a `reg…` type
        // (`'t'::regclass`, which the rewriting makes a pg_class lookup).
        let lower = sql.to_ascii_lowercase();
        if !lower.contains("pg_") && !lower.contains("reg") && !CATALOG_FUNCTIONS.iter().any(|f| lower.contains(f)) {
            return None;
        }
        let mut statements = self.inner.parse(sql).ok()?;
        if statements.len() != 1 {
            return None;
        }
        let statement = statements.pop()?;
        let names_catalog = |statements: &[SqlStatement]| {
            let mut found = ForCatalog { session, found: false };
            for s in statements {
                let _ = s.visit(&mut found);
            }
            found.found
        };
        // Some client queries are replaced whole by ones that name no catalog
        // table: the statement as sent decides, or where only the rewriting
        // parser reads it, whether it names pg_catalog at all.
        let catalog = match SqlParser::parse_sql(&PostgreSqlDialect {}, sql) {
            Ok(sent) => names_catalog(&sent),
            Err(_) => sql.to_ascii_lowercase().contains("pg_catalog"),
        } || names_catalog(std::slice::from_ref(&statement));
        catalog.then(|| DfStatement::Statement(Box::new(statement)))
    }
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

/// Looks for a relation or function of PostgreSQL's catalog.
struct ForCatalog<'a> {
    session: &'a Session,
    found: bool,
}

impl ForCatalog<'_> {
    fn names_catalog(&self, name: &ObjectName, relation: bool) -> bool {
        let parts: Vec<String> =
            name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase()).collect();
        match parts.as_slice() {
            [schema, _] => schema == "pg_catalog",
            [name] if relation => name.starts_with("pg_") && !self.session.can_read(name),
            [name] => name.starts_with("pg_") || CATALOG_FUNCTIONS.contains(&name.as_str()),
            _ => false,
        }
    }
}

impl Visitor for ForCatalog<'_> {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if self.names_catalog(relation, true) {
            self.found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr
            && self.names_catalog(&f.name, false)
        {
            self.found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// The logged-in user, the only role the catalog lists.
#[derive(Debug, Clone)]
struct Login {
    user: String,
}

#[async_trait]
impl PgCatalogContextProvider for Login {
    async fn roles(&self) -> Vec<String> {
        vec![self.user.clone()]
    }

    async fn role(&self, name: &str) -> Option<Role> {
        (name == self.user).then(|| Role {
            name: name.to_owned(),
            is_superuser: false,
            can_login: true,
            can_create_db: false,
            can_create_role: false,
            can_create_user: false,
            can_replication: false,
            grants: Vec::new(),
            inherited_roles: Vec::new(),
        })
    }
}

/// The catalog context of `session`, for `user`: every table and view the
/// role may read, empty, under `pg_catalog` and `information_schema`; on the
/// session's memory pool, with values capped at `max_value_bytes`.
pub async fn context(session: &Session, user: &str, max_value_bytes: u64) -> Result<SessionContext, DataFusionError> {
    let env = session.runtime_env();
    let pool = Arc::clone(&env.memory_pool);
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE, "public")
        .with_information_schema(true)
        .with_target_partitions(1);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(env)
        .with_default_features()
        .with_table_functions(HashMap::new())
        .with_table_factories(HashMap::new())
        .with_physical_optimizer_rule(Arc::new(limits::Interruptible))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let names: Vec<String> = session.catalog().map(|(name, _, _)| name.to_owned()).collect();
    for name in names {
        if let Some(schema) = session.schema_of(&name).await {
            ctx.register_table(name.as_str(), Arc::new(EmptyTable::new(schema)))?;
        }
    }
    datafusion_pg_catalog::setup_pg_catalog(&ctx, DATABASE, Login { user: user.to_owned() }).map_err(|e| *e)?;
    ctx.register_udf(constant_text(
        "version",
        format!("PostgreSQL {SERVER_VERSION}, ladu {}", env!("CARGO_PKG_VERSION")),
    ));
    // The login, where the crate would answer `postgres`.
    ctx.register_udf(constant_text("session_user", user.to_owned()));
    ctx.register_udf(constant_text("current_user", user.to_owned()));
    ctx.register_udf(owner());
    sandbox::remove_unoffered_functions(&ctx, &ARRAY_FUNCTIONS);
    limits::cap_values(&ctx, pool, max_value_bytes);
    Ok(ctx)
}

/// A function of no arguments that answers `text`.
fn constant_text(name: &str, text: String) -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        name,
        Vec::new(),
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(datafusion::scalar::ScalarValue::Utf8(Some(text.clone()))))
        }),
    )
}

/// `pg_get_userbyid`: every table is the server's.
fn owner() -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        "pg_get_userbyid",
        vec![DataType::Int32],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = ColumnarValue::values_to_arrays(args)?.first().map_or(1, |a| a.len());
            let owners: ArrayRef = Arc::new(StringArray::from(vec![OWNER; rows]));
            Ok(ColumnarValue::Array(owners))
        }),
    )
}
