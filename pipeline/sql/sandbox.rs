//! The read-only sandbox: which statements a SQL session runs, and which it refuses before planning.
//!
//! Two locks on every door. The parsed statement must be a query, `EXPLAIN`
//! of one, or `SHOW`/`DESCRIBE`; then the plan is checked again with
//! DataFusion's `SQLOptions` (no DDL, no DML, no statements such as `SET`).
//! The session itself has no URL tables, no table functions and no table
//! factories, so a query can only name the tables ladu registered.

use datafusion::common::TableReference;
use datafusion::common::format::ExplainFormat;
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

/// Is `statement` an `EXPLAIN` of any kind?
pub fn explains(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Explain(_) => true,
        DfStatement::Statement(s) => matches!(s.as_ref(), Statement::Explain { .. }),
        _ => false,
    }
}

/// What, beyond the plain plan, an `EXPLAIN` would show: statistics
/// (`VERBOSE`, `SHOW_STATISTICS`), every step's counts (`ANALYZE`), or the
/// plan in a form whose scans ladu cannot hide (`FORMAT tree`, …). `None`
/// for a plain `EXPLAIN` or no `EXPLAIN` at all.
pub fn plan_detail(statement: &DfStatement) -> Option<&'static str> {
    if analyzes(statement) {
        return Some("`EXPLAIN ANALYZE` counts rows beneath the role's restrictions");
    }
    match statement {
        DfStatement::Explain(e) => {
            let o = &e.options;
            if o.verbose || o.show_statistics == Some(true) {
                Some("`EXPLAIN VERBOSE` and `(COSTS)` show statistics of rows beneath the role's restrictions")
            } else if o.format.as_ref().is_some_and(|f| *f != ExplainFormat::Indent) {
                Some("`EXPLAIN FORMAT` other than `indent` shows the scans beneath the role's restrictions")
            } else {
                plan_detail(&e.statement)
            }
        }
        DfStatement::Statement(s) if matches!(s.as_ref(), Statement::Explain { .. }) => {
            Some("this form of `EXPLAIN` shows more than the plain plan")
        }
        _ => None,
    }
}

/// A plain `EXPLAIN`'s plan text with everything beneath each `RoleFilterExec`
/// (the files a scan opens, their number, the newest-version step) left out:
/// for a role that may not learn of rows it cannot read.
pub fn hide_beneath_role_filters(plan: &str) -> String {
    let mut out = String::with_capacity(plan.len());
    let mut hiding: Option<usize> = None;
    for line in plan.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(depth) = hiding {
            if indent > depth {
                continue;
            }
            hiding = None;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("RoleFilterExec") {
            hiding = Some(indent);
            out.push_str(&" ".repeat(indent + 2));
            out.push_str("(the table as the role sees it: what lies beneath is not shown)\n");
        }
    }
    if !plan.ends_with('\n') {
        out.pop();
    }
    out
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

/// Remove DataFusion's array, hash and encoding functions from `ctx`, but
/// those `keep` names. Sessions have never offered them: `array_repeat`,
/// `range` and the like make values as large as asked, outside the memory
/// pool. They are built only because `ladu serve`'s PostgreSQL catalog
/// needs a few array functions for the queries clients send it.
pub fn remove_unoffered_functions(ctx: &datafusion::prelude::SessionContext, keep: &[&str]) {
    let unoffered = datafusion::functions_nested::all_default_nested_functions()
        .into_iter()
        .chain(datafusion::functions::crypto::functions())
        .chain(datafusion::functions::encoding::functions());
    for function in unoffered {
        if !keep.contains(&function.name()) {
            ctx.deregister_udf(function.name());
        }
    }
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
    fn explain_forms_beyond_the_plain_plan_are_told_apart() {
        let parse = |sql| DFParser::parse_sql(sql).unwrap().pop_front().unwrap();
        assert_eq!(plan_detail(&parse("EXPLAIN SELECT 1")), None);
        assert_eq!(plan_detail(&parse("EXPLAIN FORMAT indent SELECT 1")), None);
        assert_eq!(plan_detail(&parse("SELECT 1")), None);
        for sql in [
            "EXPLAIN VERBOSE SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
            "EXPLAIN FORMAT tree SELECT 1",
            "EXPLAIN FORMAT graphviz SELECT 1",
            "EXPLAIN FORMAT pgjson SELECT 1",
            "EXPLAIN (COSTS TRUE) SELECT 1",
            "EXPLAIN (COSTS) SELECT 1",
        ] {
            assert!(plan_detail(&parse(sql)).is_some(), "{sql}");
            assert!(explains(&parse(sql)), "{sql}");
        }
    }

    #[test]
    fn what_lies_beneath_a_role_filter_is_hidden() {
        let plan = "ProjectionExec: expr=[a]\n  AggregateExec: mode=Final\n    RoleFilterExec: role=p, columns=[a]\n      DataSourceExec: file_groups={2 groups: [[t/year=2024/part-1.parquet]]}\n        Other\n    SortExec\n";
        let hidden = hide_beneath_role_filters(plan);
        assert!(
            !hidden.contains("DataSourceExec") && !hidden.contains("part-1") && !hidden.contains("Other"),
            "{hidden}"
        );
        assert!(hidden.contains("    RoleFilterExec") && hidden.contains("    SortExec"), "{hidden}");
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
