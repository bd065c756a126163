//! The read-only sandbox: which statements a SQL session runs, and which it refuses before planning.
//!
//! Two locks on every door. The parsed statement must be a query, `EXPLAIN`
//! of one, or `SHOW`/`DESCRIBE`; then the plan is checked again with
//! DataFusion's `SQLOptions` (no DDL, no DML, no statements such as `SET`).
//! The session itself has no URL tables, no table functions and no table
//! factories, so a query can only name the tables ladu registered.

use datafusion::common::TableReference;
use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;

/// The plan-level lock.
pub fn sql_options() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// Why `statement` may not run, or `None` if it may.
pub fn refusal(statement: &DfStatement) -> Option<String> {
    let what = match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            Statement::Query(q) if q.body.as_select().is_some_and(|s| s.into.is_some()) => "SELECT … INTO",
            Statement::Query(_)
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ExplainTable { .. } => return None,
            Statement::Explain { statement, .. } => {
                return refusal(&DfStatement::Statement(statement.clone()));
            }
            Statement::Set(_) => "SET",
            Statement::Insert(_) => "INSERT",
            Statement::Update(_) => "UPDATE",
            Statement::Delete(_) => "DELETE",
            Statement::CreateTable(_) => "CREATE TABLE",
            Statement::CreateView(_) => "CREATE VIEW",
            Statement::Drop { .. } => "DROP",
            Statement::Copy { .. } => "COPY",
            _ => return Some(format!("`{}` statements are refused", first_words(&s.to_string()))),
        },
        DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE",
        DfStatement::CopyTo(_) => "COPY",
        DfStatement::Reset(_) => "RESET",
        DfStatement::Explain(e) => return refusal(&e.statement),
    };
    Some(format!("`{what}` statements are refused"))
}

/// Is `statement` an `EXPLAIN ANALYZE`, which runs the query and reports how
/// many rows each step saw, including the scan beneath a role's restriction?
pub fn analyzes(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Explain(e) => e.options.analyze || analyzes(&e.statement),
        DfStatement::Statement(s) => matches!(s.as_ref(), Statement::Explain { analyze: true, .. }),
        _ => false,
    }
}

/// The first two words of a statement, upper-cased, naming its kind.
fn first_words(text: &str) -> String {
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ").to_uppercase()
}

/// Does a table name look like a file or a URL rather than a table?
pub fn names_a_file(reference: &TableReference) -> bool {
    let t = reference.table();
    t.contains('/') || t.contains('\\') || t.contains(':') || t.rsplit_once('.').is_some_and(|(_, ext)| !ext.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn check(sql: &str) -> Option<String> {
        let mut s = DFParser::parse_sql(sql).unwrap();
        refusal(&s.pop_front().unwrap())
    }

    #[test]
    fn queries_run_and_everything_else_is_refused() {
        for ok in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
            "SHOW TABLES",
            "SHOW COLUMNS FROM t",
            "DESCRIBE t",
            "SELECT 1 UNION ALL SELECT 2",
        ] {
            assert_eq!(check(ok), None, "{ok}");
        }
        for (bad, kind) in [
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'", "CREATE EXTERNAL TABLE"),
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("DELETE FROM t", "DELETE"),
            ("UPDATE t SET a = 1", "UPDATE"),
            ("DROP TABLE t", "DROP"),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            ("SELECT 1 INTO t", "SELECT … INTO"),
            ("RESET datafusion.execution.batch_size", "RESET"),
            ("CREATE SCHEMA s", "CREATE SCHEMA"),
        ] {
            let why = check(bad).unwrap_or_else(|| panic!("{bad} was allowed"));
            assert!(why.contains(kind), "{bad}: {why}");
        }
    }

    #[test]
    fn explain_analyze_is_told_from_explain() {
        let parse = |sql| DFParser::parse_sql(sql).unwrap().pop_front().unwrap();
        assert!(analyzes(&parse("EXPLAIN ANALYZE SELECT 1")));
        assert!(analyzes(&parse("EXPLAIN ANALYZE VERBOSE SELECT 1")));
        assert!(!analyzes(&parse("EXPLAIN SELECT 1")));
        assert!(!analyzes(&parse("SELECT 1")));
    }

    #[test]
    fn file_names_are_told_from_table_names() {
        for f in ["x.csv", "/etc/passwd", "data/x.parquet", "s3://b/k", "file:///x"] {
            assert!(names_a_file(&TableReference::bare(f)), "{f}");
        }
        for t in ["treatment_invoices", "population_history"] {
            assert!(!names_a_file(&TableReference::bare(t)), "{t}");
        }
    }
}
