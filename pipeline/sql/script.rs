//! SQL scripts as a user types them: statements end at a `;` outside quotes and comments; `\` lines are commands.

/// One thing to do, in the order the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A SQL statement, without its `;`.
    Statement(String),
    /// A shell command such as `\d TABLE` or `\q`, trimmed.
    Command(String),
}

/// Collects lines and hands out whole statements as soon as they end.
#[derive(Debug, Default)]
pub struct Script {
    /// Text of the statement not yet ended.
    pending: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    /// Inside '…' (`''` is an escaped quote).
    Text,
    /// Inside "…".
    Name,
    LineComment,
    BlockComment,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    /// Is a statement begun but not ended (for a continuation prompt)?
    pub fn in_statement(&self) -> bool {
        has_code(&self.pending)
    }

    /// Feed one line (without its line break).
    pub fn line(&mut self, line: &str) -> Vec<Item> {
        if !self.in_statement() && line.trim_start().starts_with('\\') {
            self.pending.clear();
            return vec![Item::Command(line.trim().to_owned())];
        }
        self.pending.push_str(line);
        self.pending.push('\n');
        let (statements, rest) = split(&self.pending);
        let items = statements.into_iter().map(Item::Statement).collect();
        self.pending.drain(..rest);
        items
    }

    /// The last statement, if the input ended without its `;`.
    pub fn finish(self) -> Option<Item> {
        has_code(&self.pending).then(|| Item::Statement(self.pending.trim().to_owned()))
    }
}

/// The ended statements in `text` (trimmed, without `;`, blank ones skipped)
/// and the byte offset where the unended rest starts.
fn split(text: &str) -> (Vec<String>, usize) {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut state, mut start, mut i) = (State::Code, 0, 0);
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match state {
            State::Code => match c {
                b'\'' => state = State::Text,
                b'"' => state = State::Name,
                b'-' if next == Some(b'-') => {
                    state = State::LineComment;
                    i += 1;
                }
                b'/' if next == Some(b'*') => {
                    state = State::BlockComment;
                    i += 1;
                }
                b';' => {
                    let statement = &text[start..i];
                    if has_code(statement) {
                        out.push(statement.trim().to_owned());
                    }
                    start = i + 1;
                }
                _ => {}
            },
            State::Text if c == b'\'' => {
                if next == Some(b'\'') {
                    i += 1;
                } else {
                    state = State::Code;
                }
            }
            State::Name if c == b'"' => state = State::Code,
            State::LineComment if c == b'\n' => state = State::Code,
            State::BlockComment if c == b'*' && next == Some(b'/') => {
                state = State::Code;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    (out, start)
}

/// Does `text` hold anything but white space and comments?
fn has_code(text: &str) -> bool {
    let mut rest = text.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after).trim_start();
        } else {
            return !rest.is_empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn statements(text: &str) -> Vec<String> {
        let mut s = Script::new();
        let mut out: Vec<String> = text
            .lines()
            .flat_map(|l| s.line(l))
            .map(|i| match i {
                Item::Statement(s) => s,
                Item::Command(c) => format!("CMD {c}"),
            })
            .collect();
        if let Some(Item::Statement(last)) = s.finish() {
            out.push(last);
        }
        out
    }

    #[test]
    fn semicolons_in_quotes_and_comments_do_not_end_a_statement() {
        assert_eq!(
            statements("SELECT ';' AS \"a;b\" -- c;\n, 'it''s;' /* x; */ FROM t;\nSELECT 2"),
            ["SELECT ';' AS \"a;b\" -- c;\n, 'it''s;' /* x; */ FROM t", "SELECT 2"]
        );
        assert_eq!(statements("  ;; -- only a comment;\n/* and; this */ ;"), Vec::<String>::new());
    }

    #[test]
    fn commands_only_between_statements() {
        assert_eq!(statements("\\d\nSELECT 1\n\\d t\n;\n \\q "), ["CMD \\d", "SELECT 1\n\\d t", "CMD \\q"]);
    }

    #[test]
    fn a_statement_over_several_lines_waits_for_its_semicolon() {
        let mut s = Script::new();
        assert!(s.line("SELECT").is_empty());
        assert!(s.in_statement());
        assert!(s.line("  1").is_empty());
        assert_eq!(s.line("; SELECT 2;"), [Item::Statement("SELECT\n  1".into()), Item::Statement("SELECT 2".into())]);
        assert!(!s.in_statement());
    }

    proptest! {
        /// Statements joined with `;` come back as they were, whatever they quote.
        #[test]
        fn joined_statements_split_back(parts in prop::collection::vec("[a-z0-9 ]{1,6}('[a-z;\"]{0,4}')?( \"[a-z;']{0,4}\")?[a-z ]{0,4}", 1..5)) {
            let parts: Vec<String> = parts.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
            let text = parts.iter().map(|p| format!("{p};")).collect::<Vec<_>>().join("\n");
            prop_assert_eq!(statements(&text), parts);
        }
    }
}
