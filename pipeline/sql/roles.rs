//! Roles (`config/roles.toml`): which tables a role reads, which columns it never sees, which rows.
//!
//! Named roles are listed under `[roles.<name>]`. Provider roles are
//! `provider:<regcode>` for any 8-digit business register code: they see only
//! the rows whose code column (`[provider_roles] code_columns`) holds their
//! own code, and no table without such a column unless it is granted. They
//! never see the row metadata `_line` and `_commit` unless the roles file
//! grants them (`grant_columns`): in a delivery shared by several providers,
//! a provider's line numbers give the positions and number of the others'
//! rows, and `_commit` the warehouse's versions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Prefix of a provider role: `provider:90006399`.
pub const PROVIDER_PREFIX: &str = "provider:";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the roles file {path}: {source}; copy config/roles.toml there or set `sql.roles_file`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the roles file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the roles file {path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<String> },
    #[error("unknown role `{name}`: the roles in {path} are {known}, and provider:<8-digit register code>")]
    UnknownRole { name: String, path: PathBuf, known: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    default_role: String,
    provider_roles: Option<RawProviderRoles>,
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    description: String,
    tables: Vec<String>,
    #[serde(default)]
    hidden_columns: Vec<String>,
    /// Per table, a SQL condition over the table's columns; only rows passing it are seen.
    #[serde(default)]
    row_filter: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProviderRoles {
    description: String,
    code_columns: Vec<String>,
    #[serde(default)]
    grant: Vec<String>,
    #[serde(default)]
    hidden_columns: Vec<String>,
    /// Row metadata (of [`PROVIDER_HIDDEN`]) provider roles may see after all.
    #[serde(default)]
    grant_columns: Vec<String>,
}

/// Row metadata hidden from provider roles unless `grant_columns` names it.
pub const PROVIDER_HIDDEN: [&str; 2] = ["_line", "_commit"];

/// The roles file, checked.
#[derive(Debug, Clone)]
pub struct Roles {
    path: PathBuf,
    pub default_role: String,
    named: BTreeMap<String, RawRole>,
    provider: Option<RawProviderRoles>,
}

/// What one role may see (it travels whole in a plan that goes to the cluster).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub description: String,
    /// Base table names (each covers `<table>` and `<table>_history`), or `*`.
    tables: Vec<String>,
    /// `column` (in every table) or `table.column`.
    hidden: Vec<String>,
    pub filter: RowFilter,
}

/// The rows a role sees.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum RowFilter {
    /// Every row of every table it reads.
    None,
    /// Per table, a SQL condition (tables not named: every row).
    Conditions(BTreeMap<String, String>),
    /// Rows whose code column holds `code`; tables with no code column only if granted.
    Provider { code: String, code_columns: Vec<String>, grant: Vec<String> },
}

/// How a role reads one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Hidden,
    Visible { hidden_columns: Vec<String>, condition: Option<Condition> },
}

/// A row condition on one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// SQL text from the roles file.
    Sql(String),
    /// Any of these columns equals the code.
    CodeIn { columns: Vec<String>, code: String },
}

impl Roles {
    /// Read and check the roles file; `tables` are the warehouse's table names.
    pub fn load(path: &Path, tables: &[String]) -> Result<Roles, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        let raw: RawRoles =
            toml::from_str(&text).map_err(|e| Error::Parse { path: path.to_owned(), message: e.to_string() })?;
        let mut problems = Vec::new();
        let known_table = |t: &str| t == "*" || tables.iter().any(|k| k == t);
        let check_columns = |role: &str, cols: &[String], problems: &mut Vec<String>| {
            for c in cols {
                if let Some((t, _)) = c.split_once('.')
                    && !known_table(t)
                {
                    problems.push(format!("{role}.hidden_columns: `{c}` names unknown table `{t}`"));
                }
            }
        };
        for (name, r) in &raw.roles {
            if name.starts_with(PROVIDER_PREFIX) || name.contains(char::is_whitespace) || name.is_empty() {
                problems.push(format!("roles.{name}: a role name is one word and does not start with `provider:`"));
            }
            for t in r.tables.iter().chain(r.row_filter.keys()) {
                if !known_table(t) {
                    problems.push(format!("roles.{name}: unknown table `{t}` (known: {})", tables.join(", ")));
                }
            }
            check_columns(&format!("roles.{name}"), &r.hidden_columns, &mut problems);
        }
        if let Some(p) = &raw.provider_roles {
            if p.code_columns.is_empty() {
                problems.push("provider_roles.code_columns: name at least one column".into());
            }
            for t in &p.grant {
                if !known_table(t) || t == "*" {
                    problems.push(format!("provider_roles.grant: unknown table `{t}`"));
                }
            }
            check_columns("provider_roles", &p.hidden_columns, &mut problems);
            for c in &p.grant_columns {
                if !PROVIDER_HIDDEN.contains(&c.as_str()) {
                    problems.push(format!(
                        "provider_roles.grant_columns: `{c}` is not one of {}",
                        PROVIDER_HIDDEN.join(", ")
                    ));
                }
            }
        }
        let default_is_known = raw.roles.contains_key(&raw.default_role)
            || (raw.provider_roles.is_some() && is_provider_role(&raw.default_role));
        if !default_is_known {
            problems.push(format!("default_role: `{}` is not a role of this file", raw.default_role));
        }
        if !problems.is_empty() {
            return Err(Error::Invalid { path: path.to_owned(), problems });
        }
        Ok(Roles {
            path: path.to_owned(),
            default_role: raw.default_role,
            named: raw.roles,
            provider: raw.provider_roles,
        })
    }

    /// The role called `name` (the default role when `None`).
    pub fn role(&self, name: Option<&str>) -> Result<Role, Error> {
        let name = name.unwrap_or(&self.default_role);
        if let Some(r) = self.named.get(name) {
            let filter =
                if r.row_filter.is_empty() { RowFilter::None } else { RowFilter::Conditions(r.row_filter.clone()) };
            return Ok(Role {
                name: name.to_owned(),
                description: r.description.clone(),
                tables: r.tables.clone(),
                hidden: r.hidden_columns.clone(),
                filter,
            });
        }
        if let (Some(p), Some(code)) = (&self.provider, name.strip_prefix(PROVIDER_PREFIX))
            && is_provider_role(name)
        {
            return Ok(Role {
                name: name.to_owned(),
                description: p.description.clone(),
                tables: vec!["*".into()],
                hidden: p
                    .hidden_columns
                    .iter()
                    .cloned()
                    .chain(
                        PROVIDER_HIDDEN
                            .iter()
                            .filter(|c| !p.grant_columns.iter().any(|g| g == *c))
                            .map(|c| (*c).to_owned()),
                    )
                    .collect(),
                filter: RowFilter::Provider {
                    code: code.to_owned(),
                    code_columns: p.code_columns.clone(),
                    grant: p.grant.clone(),
                },
            });
        }
        Err(Error::UnknownRole {
            name: name.to_owned(),
            path: self.path.clone(),
            known: self.named.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// Every named role, for reports.
    pub fn named_roles(&self) -> impl Iterator<Item = Role> + '_ {
        self.named.keys().filter_map(|n| self.role(Some(n)).ok())
    }
}

fn is_provider_role(name: &str) -> bool {
    name.strip_prefix(PROVIDER_PREFIX).is_some_and(|c| c.len() == 8 && c.bytes().all(|b| b.is_ascii_digit()))
}

impl Role {
    /// Every table, column and row: only for checking curated views.
    pub fn everything() -> Role {
        Role {
            name: "(every table)".into(),
            description: String::new(),
            tables: vec!["*".into()],
            hidden: Vec::new(),
            filter: RowFilter::None,
        }
    }

    /// The tables it may read (`*`: all) and the columns hidden from it, as the roles file says.
    pub fn scope(&self) -> (&[String], &[String]) {
        (&self.tables, &self.hidden)
    }

    /// Does this role see every table, column and row?
    pub fn sees_everything(&self) -> bool {
        self.tables.iter().any(|t| t == "*") && self.hidden.is_empty() && self.filter == RowFilter::None
    }

    /// How this role reads base table `table` whose columns are `columns`.
    pub fn access(&self, table: &str, columns: &[&str]) -> Access {
        if !self.tables.iter().any(|t| t == "*" || t == table) {
            return Access::Hidden;
        }
        let condition = match &self.filter {
            RowFilter::None => None,
            RowFilter::Conditions(c) => c.get(table).cloned().map(Condition::Sql),
            RowFilter::Provider { code, code_columns, grant } => {
                let present: Vec<String> =
                    code_columns.iter().filter(|c| columns.contains(&c.as_str())).cloned().collect();
                if !present.is_empty() {
                    Some(Condition::CodeIn { columns: present, code: code.clone() })
                } else if grant.iter().any(|g| g == table) {
                    None
                } else {
                    return Access::Hidden;
                }
            }
        };
        let hidden_columns = columns
            .iter()
            .filter(|c| {
                self.hidden.iter().any(|h| match h.split_once('.') {
                    Some((t, col)) => (t == "*" || t == table) && col == **c,
                    None => h == *c,
                })
            })
            .map(|c| (*c).to_owned())
            .collect();
        Access::Visible { hidden_columns, condition }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(text: &str) -> Result<Roles, Error> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("roles.toml");
        std::fs::write(&p, text).unwrap();
        Roles::load(&p, &["invoices".into(), "population".into(), "ambulance".into()])
    }

    const FILE: &str = r#"
default_role = "analyst"
[provider_roles]
description = "a provider"
code_columns = ["provider_regcode", "issuer_regcode"]
grant = ["population"]
hidden_columns = ["doctor_id"]
[roles.analyst]
description = "everything"
tables = ["*"]
hidden_columns = ["invoices.amount"]
[roles.fund]
description = "invoices only"
tables = ["invoices"]
row_filter = { invoices = "care_type = 'AMB'" }
"#;

    #[test]
    fn named_and_provider_roles_resolve() {
        let r = roles(FILE).unwrap();
        let analyst = r.role(None).unwrap();
        assert_eq!(analyst.name, "analyst");
        assert_eq!(
            analyst.access("invoices", &["amount", "person_id"]),
            Access::Visible { hidden_columns: vec!["amount".into()], condition: None }
        );
        assert_eq!(
            analyst.access("population", &["amount"]),
            Access::Visible { hidden_columns: vec![], condition: None }
        );
        let fund = r.role(Some("fund")).unwrap();
        assert_eq!(fund.access("population", &["x"]), Access::Hidden);
        assert_eq!(
            fund.access("invoices", &["care_type"]),
            Access::Visible { hidden_columns: vec![], condition: Some(Condition::Sql("care_type = 'AMB'".into())) }
        );
        let p = r.role(Some("provider:90006399")).unwrap();
        assert_eq!(
            p.access("invoices", &["provider_regcode", "doctor_id"]),
            Access::Visible {
                hidden_columns: vec!["doctor_id".into()],
                condition: Some(Condition::CodeIn {
                    columns: vec!["provider_regcode".into()],
                    code: "90006399".into()
                })
            }
        );
        assert_eq!(p.access("ambulance", &["county"]), Access::Hidden, "no code column, not granted");
        assert_eq!(p.access("population", &["county"]), Access::Visible { hidden_columns: vec![], condition: None });
        for bad in ["provider:123", "provider:9000639x", "nobody", "provider:900063991"] {
            assert!(matches!(r.role(Some(bad)), Err(Error::UnknownRole { .. })), "{bad}");
        }
    }

    #[test]
    fn mistakes_in_the_file_are_named() {
        let e = roles(
            &FILE
                .replace("tables = [\"invoices\"]", "tables = [\"invoice\"]")
                .replace("default_role = \"analyst\"", "default_role = \"boss\""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown table `invoice`") && e.contains("default_role: `boss`"), "{e}");
        let e = roles(&FILE.replace("description = \"everything\"", "descr = 1")).unwrap_err().to_string();
        assert!(e.contains("descr"), "{e}");
    }
}
