//! The gate every user expression passes before lance or DataFusion sees it: query
//! filters, count and delete predicates, projection expressions and SQL statements.
//!
//! It exists because neither library protects itself. lance parses a filter as part of
//! `SELECT 1 FROM t WHERE <filter>` and takes whatever prefix parses, so trailing text is
//! dropped without a word (`id >= 0) AND (id > 100` deleted a whole table). And both walk
//! expression trees recursively: a chain of a few thousand operators overflows a worker
//! thread's stack, which aborts the process. Here an expression is parsed the way lance
//! parses it (same dialect, same `==` rule), must be consumed to its end, and is bounded in
//! size and depth; the caller still hands the original text on, this module only refuses.
//!
//! It does not resolve columns or types: that stays with lance and DataFusion, whose own
//! messages are the better ones.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Query, Select, TableFactor, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// Deepest nesting of expressions (and subqueries) a request may send. Legitimate filters
/// are a few levels deep; a generated `a = 1 OR a = 2 OR …` chain is as deep as it is long,
/// and an `IN (…)` list, however long, is two levels.
pub const MAX_EXPR_DEPTH: usize = 256;

/// Most operators (`AND`, `=`, `+`, `IS`, …) one expression or SQL statement may hold,
/// checked on the tokens before anything is parsed: it bounds the tree the parser builds
/// (and later drops, recursively) to a depth the stack can take.
pub const MAX_EXPR_OPERATORS: usize = 4096;

/// Most SELECTs and table references (each side of a join, each CTE's body, each branch of
/// a UNION) one SQL statement may hold. The parser builds chains of them without nesting,
/// but DataFusion plans and optimises them recursively, and in time that grows faster than
/// their number: a chain of 1300 CTEs overflowed a 16 MiB stack, 400 joins took over 30 s.
pub const MAX_SQL_RELATIONS: usize = 128;

/// Longest expression or SQL statement, in bytes (a 100 000-element `IN` list fits).
pub const MAX_EXPR_BYTES: usize = 1 << 20;

/// Why an expression was refused. Every variant is the caller's 400.
#[derive(Debug, thiserror::Error)]
pub enum ExprError {
    #[error("The {what} is {len} bytes long; an expression may be at most {MAX_EXPR_BYTES} bytes")]
    TooLong { what: String, len: usize },
    #[error("The {what} has more than {MAX_EXPR_OPERATORS} operators, the most an expression may have")]
    TooManyOperators { what: String },
    #[error("The {what} nests more than {MAX_EXPR_DEPTH} levels deep, the deepest an expression may be")]
    TooDeep { what: String },
    #[error(
        "The {what} has more than {MAX_SQL_RELATIONS} SELECTs and table references, the most a statement may have"
    )]
    TooManyRelations { what: String },
    #[error("The {what} does not parse: {message}")]
    Syntax { what: String, message: String },
}

/// lance's filter dialect: the generic one, with backticks quoting identifiers.
#[derive(Debug, Default)]
struct LanceFilterDialect(GenericDialect);

impl Dialect for LanceFilterDialect {
    // The parser asks for the dialect's type to switch generic behaviour on; lance answers
    // with the generic dialect's, so this does too.
    fn dialect(&self) -> std::any::TypeId {
        self.0.dialect()
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        self.0.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.0.is_identifier_part(ch)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`'
    }
    fn supports_bitwise_shift_operators(&self) -> bool {
        self.0.supports_bitwise_shift_operators()
    }
}

/// Checks a filter, predicate or projection expression as lance will parse it: the whole
/// text must be one expression, within the size and depth limits. `what` names it in the
/// message ("filter", "delete predicate", "column expression 'x'").
pub fn check_expression(what: &str, text: &str) -> Result<(), ExprError> {
    let dialect = LanceFilterDialect::default();
    let tokens = tokens(what, text, &dialect)?;
    // lance reads `a == b` as `a = b` by dropping the second of two `=` tokens.
    let mut kept: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    for t in tokens {
        if t.token == Token::Eq && kept.last().is_some_and(|p| p.token == Token::Eq) {
            continue;
        }
        kept.push(t);
    }
    let syntax = |e: datafusion::sql::sqlparser::parser::ParserError| ExprError::Syntax {
        what: what.to_string(),
        message: e.to_string(),
    };
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(kept);
    let expr = parser.parse_expr().map_err(syntax)?;
    // What lance would silently drop: anything after the expression.
    parser.expect_token(&Token::EOF).map_err(syntax)?;
    check_tree(what, &expr, usize::MAX)
}

/// Checks a SQL statement's size (before DataFusion parses it) and, once parsed, its depth.
pub fn check_sql_size(text: &str) -> Result<(), ExprError> {
    tokens("SQL statement", text, &GenericDialect {}).map(drop)
}

/// Checks the depth of every expression and subquery of a parsed SQL statement, and how
/// many relations it holds.
pub fn check_sql_tree<V: Visit>(statement: &V) -> Result<(), ExprError> {
    check_tree("SQL statement", statement, MAX_SQL_RELATIONS)
}

/// The tokens of `text`, once its length and operator count are within the limits.
fn tokens(what: &str, text: &str, dialect: &dyn Dialect) -> Result<Vec<TokenWithSpan>, ExprError> {
    if text.len() > MAX_EXPR_BYTES {
        return Err(ExprError::TooLong { what: what.to_string(), len: text.len() });
    }
    let tokens = Tokenizer::new(dialect, text)
        .tokenize_with_location()
        .map_err(|e| ExprError::Syntax { what: what.to_string(), message: e.to_string() })?;
    let mut operators = 0usize;
    let mut prev: Option<&Token> = None;
    for t in &tokens {
        if matches!(t.token, Token::Whitespace(_)) {
            continue;
        }
        if is_operator(&t.token, prev) {
            operators += 1;
            if operators > MAX_EXPR_OPERATORS {
                return Err(ExprError::TooManyOperators { what: what.to_string() });
            }
        }
        prev = Some(&t.token);
    }
    Ok(tokens)
}

/// Whether a token can add a level to the tree the parser builds. Leaves (names, literals)
/// and list punctuation cannot; nor can the sign of a number that opens a list item, so a
/// long `IN (-1, -2, …)` list is not counted as operators.
fn is_operator(t: &Token, prev: Option<&Token>) -> bool {
    match t {
        Token::Word(w) => {
            !matches!(w.keyword, Keyword::NoKeyword | Keyword::NULL | Keyword::TRUE | Keyword::FALSE)
        }
        Token::Minus | Token::Plus => {
            !matches!(prev, None | Some(Token::Comma | Token::LParen | Token::LBracket))
        }
        Token::EOF
        | Token::Number(..)
        | Token::Comma
        | Token::Whitespace(_)
        | Token::LParen
        | Token::RParen
        | Token::LBracket
        | Token::RBracket
        | Token::LBrace
        | Token::RBrace
        | Token::Period
        | Token::Placeholder(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_) => false,
        _ => true,
    }
}

/// Counts nesting on the way down (and relations as they come) and stops at the first level
/// past a limit, so the walk itself never recurses deeper than the depth limit.
struct Gauge {
    depth: usize,
    relations: usize,
    max_relations: usize,
}

enum Exceeded {
    Depth,
    Relations,
}

impl Gauge {
    fn enter(&mut self) -> ControlFlow<Exceeded> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            ControlFlow::Break(Exceeded::Depth)
        } else {
            ControlFlow::Continue(())
        }
    }
    fn leave(&mut self) -> ControlFlow<Exceeded> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
    fn relation(&mut self) -> ControlFlow<Exceeded> {
        self.relations += 1;
        if self.relations > self.max_relations {
            ControlFlow::Break(Exceeded::Relations)
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Visitor for Gauge {
    type Break = Exceeded;
    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Exceeded> {
        // `a[1][2]…` and `a.b.c…` are flat lists here, but each step is a level of
        // get_field calls once planned.
        let steps = match e {
            Expr::CompoundFieldAccess { access_chain, .. } => access_chain.len(),
            Expr::CompoundIdentifier(parts) => parts.len(),
            _ => 0,
        };
        if self.depth.saturating_add(steps) > MAX_EXPR_DEPTH {
            return ControlFlow::Break(Exceeded::Depth);
        }
        self.enter()
    }
    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<Exceeded> {
        self.leave()
    }
    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<Exceeded> {
        self.enter()
    }
    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<Exceeded> {
        self.leave()
    }
    fn pre_visit_select(&mut self, _: &Select) -> ControlFlow<Exceeded> {
        self.relation()
    }
    fn pre_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<Exceeded> {
        self.relation()
    }
}

fn check_tree<V: Visit>(what: &str, node: &V, max_relations: usize) -> Result<(), ExprError> {
    let what = what.to_string();
    match node.visit(&mut Gauge { depth: 0, relations: 0, max_relations }) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(Exceeded::Depth) => Err(ExprError::TooDeep { what }),
        ControlFlow::Break(Exceeded::Relations) => Err(ExprError::TooManyRelations { what }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn chain(term: &str, op: &str, n: usize) -> String {
        vec![term; n].join(op)
    }

    #[test]
    fn whole_expressions_pass() {
        for ok in [
            "clip < 10",
            "id >= 0 AND (id > 100)",
            "category = 'a' OR text LIKE '%x%'",
            "a == b",
            "`a:Test` == `CUBE`",
            "id IN (1, 2, 3)",
            "x IS NOT NULL",
            "-1 < id",
        ] {
            check_expression("filter", ok).unwrap();
        }
    }

    #[test]
    fn trailing_text_is_refused_with_the_parsers_message() {
        for bad in ["clip < 10 garbage", "clip < 10) OR (clip >= 0", "id >= 0) AND (id > 100", "a = 1; DROP"]
        {
            let e = check_expression("filter", bad).unwrap_err();
            assert!(matches!(e, ExprError::Syntax { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("Expected: EOF"), "{bad}: {e}");
        }
        let e = check_expression("filter", "a = 1 ORDER BY b").unwrap_err().to_string();
        assert!(e.contains("found: ORDER"), "{e}");
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let deep = chain("id = 1", " OR ", MAX_EXPR_DEPTH + 1);
        assert!(matches!(check_expression("filter", &deep), Err(ExprError::TooDeep { .. })));
        let fine = chain("id = 1", " OR ", MAX_EXPR_DEPTH / 2);
        check_expression("filter", &fine).unwrap();
        // The most operators the token count lets through still builds, walks and drops
        // on a test thread's stack.
        let widest = chain("1", " OR ", MAX_EXPR_OPERATORS);
        assert!(matches!(check_expression("filter", &widest), Err(ExprError::TooDeep { .. })));
        let subscripts = format!("x{}", "[1]".repeat(MAX_EXPR_DEPTH + 1));
        assert!(matches!(check_expression("filter", &subscripts), Err(ExprError::TooDeep { .. })));
        // (A long `a.b.c…` path already meets the parser's own recursion limit.)
        let path = vec!["col"; MAX_EXPR_DEPTH + 1].join(".");
        assert!(check_expression("filter", &path).is_err());
        let huge = chain("1", " OR ", 60_000);
        assert!(matches!(check_expression("filter", &huge), Err(ExprError::TooManyOperators { .. })));
        let list =
            format!("id IN ({})", (0..100_000).map(|i| (-i).to_string()).collect::<Vec<_>>().join(", "));
        check_expression("filter", &list).unwrap();
        let long = format!("id IN ({})", vec!["1"; MAX_EXPR_BYTES / 2].join(","));
        assert!(matches!(check_expression("filter", &long), Err(ExprError::TooLong { .. })));
        let sum = format!("SELECT {}", chain("1", "+", 1000));
        assert!(matches!(check_sql_size(&sum), Ok(())));
        let e = check_sql_size(&format!("SELECT {}", chain("1", "+", 5000))).unwrap_err();
        assert!(e.to_string().contains("4096"), "{e}");
    }
}
