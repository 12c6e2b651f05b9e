//! The AIP-160 subset every List accepts: a conjunction of comparisons,
//! `field op value [AND field op value ...]`, with `op` one of `= != < <= > >=` and `value` a
//! bare word or a double-quoted string (with `\"` and `\\` escapes). Services decide which
//! fields and operators they accept.

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub field: String,
    pub op: Op,
    pub value: String,
}

/// Longest filter accepted, to bound parsing work.
const MAX_FILTER_LEN: usize = 2048;

fn invalid(reason: impl Into<String>) -> ApiError {
    ApiError::invalid_field("filter", reason)
}

/// Parses a filter into its comparisons (empty filter: none).
pub fn parse(filter: &str) -> Result<Vec<Comparison>, ApiError> {
    if filter.len() > MAX_FILTER_LEN {
        return Err(invalid(format!("is longer than {MAX_FILTER_LEN} characters")));
    }
    let tokens = tokenize(filter)?;
    let mut comparisons = Vec::new();
    let mut rest = tokens.as_slice();
    while !rest.is_empty() {
        let [Token::Word(field), Token::Op(op), value, tail @ ..] = rest else {
            return Err(invalid("expected `field op value`, for example `owner = \"u1\"`"));
        };
        let value = match value {
            Token::Word(w) | Token::Quoted(w) => w.clone(),
            Token::Op(_) => return Err(invalid(format!("expected a value after `{field} {}`", op.as_str()))),
        };
        if !field.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '.') {
            return Err(invalid(format!("`{field}` is not a field name")));
        }
        comparisons.push(Comparison {
            field: field.clone(),
            op: *op,
            value,
        });
        rest = match tail {
            [] => &[],
            [Token::Word(and), more @ ..] if and == "AND" && !more.is_empty() => more,
            _ => return Err(invalid("terms must be joined with AND (OR and NOT are not supported)")),
        };
    }
    Ok(comparisons)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(Op),
}

fn tokenize(input: &str) -> Result<Vec<Token>, ApiError> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped @ ('"' | '\\')) => value.push(escaped),
                            _ => return Err(invalid("only \\\" and \\\\ may be escaped in a string")),
                        },
                        Some(other) => value.push(other),
                        None => return Err(invalid("unterminated string")),
                    }
                }
                tokens.push(Token::Quoted(value));
            }
            '=' | '!' | '<' | '>' => {
                chars.next();
                let with_eq = chars.next_if_eq(&'=').is_some();
                let op = match (c, with_eq) {
                    ('=', false) => Op::Eq,
                    ('!', true) => Op::Ne,
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    ('>', false) => Op::Gt,
                    ('>', true) => Op::Ge,
                    _ => return Err(invalid(format!("unknown operator near `{c}`"))),
                };
                tokens.push(Token::Op(op));
            }
            '(' | ')' | ':' | '~' => return Err(invalid(format!("`{c}` is not supported"))),
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '=' | '!' | '<' | '>' | '"' | '(' | ')') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conjunctions() {
        let parsed = parse(r#"lifecycle_stage = LEAD AND owner="u 1" AND create_time >= "2026-01-01T00:00:00Z""#)
            .expect("valid");
        assert_eq!(parsed.len(), 3);
        assert_eq!(
            parsed[1],
            Comparison {
                field: "owner".into(),
                op: Op::Eq,
                value: "u 1".into()
            }
        );
        assert_eq!(parsed[2].op, Op::Ge);
        assert!(parse("").expect("empty").is_empty());
        assert_eq!(parse(r#"tag = "a\"b""#).expect("escape")[0].value, "a\"b");
    }

    #[test]
    fn rejects_what_it_does_not_support() {
        for bad in [
            "owner",
            "owner =",
            "owner = a OR owner = b",
            "owner = a AND",
            "(owner = a)",
            "owner = \"open",
            "Owner = a",
            "owner == a",
            "owner = a owner = b",
        ] {
            let err = parse(bad).expect_err(bad);
            assert_eq!(err.violations[0].field, "filter", "{bad}");
        }
    }
}
