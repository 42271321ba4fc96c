//! A small subset of Consul's filter expressions (go-bexpr), enough for resolver subsets
//! (`Service.Meta.version == v1`, `"v1" in Service.Tags`) and `?filter=` on reads:
//! clauses `Sel == V`, `Sel != V`, `V in Sel`, `V not in Sel`, `Sel contains V`,
//! `Sel not contains V`, joined by `and`. Values are bare words or quoted strings.
//! `or`, `not (…)` and parentheses are not supported and are refused with a clear error.

/// Value of a selector on the object being filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    /// A string (numbers are compared as their decimal text).
    Str(String),
    /// A list of strings (tags).
    List(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    NotEq,
    /// Value is in the list, or a substring of the string.
    In,
    NotIn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    selector: String,
    op: Op,
    value: String,
}

/// A parsed filter: every clause must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Eq,
    NotEq,
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '`' {
            chars.next();
            let mut s = String::new();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                if ch == c {
                    closed = true;
                    break;
                }
                if ch == '\\' && c == '"' {
                    if let Some(esc) = chars.next() {
                        s.push(esc);
                    }
                    continue;
                }
                s.push(ch);
            }
            if !closed {
                return Err("unterminated string".into());
            }
            toks.push(Tok::Quoted(s));
        } else if c == '=' || c == '!' {
            chars.next();
            if chars.next() != Some('=') {
                return Err(format!("unexpected {c:?}"));
            }
            toks.push(if c == '=' { Tok::Eq } else { Tok::NotEq });
        } else if c == '(' || c == ')' {
            return Err("parentheses are not supported".into());
        } else {
            let mut s = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || matches!(ch, '=' | '!' | '"' | '`' | '(' | ')') {
                    break;
                }
                s.push(ch);
                chars.next();
            }
            toks.push(Tok::Word(s));
        }
    }
    Ok(toks)
}

fn is_word(t: &Tok, w: &str) -> bool {
    matches!(t, Tok::Word(s) if s == w)
}

fn value_of(t: &Tok) -> Option<String> {
    match t {
        Tok::Word(s) | Tok::Quoted(s) => Some(s.clone()),
        _ => None,
    }
}

fn selector_of(t: &Tok) -> Option<String> {
    match t {
        Tok::Word(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn parse_clause(toks: &[Tok]) -> Option<Clause> {
    let clause = |selector: &Tok, op, value: &Tok| {
        Some(Clause {
            selector: selector_of(selector)?,
            op,
            value: value_of(value)?,
        })
    };
    match toks {
        [s, Tok::Eq, v] => clause(s, Op::Eq, v),
        [s, Tok::NotEq, v] => clause(s, Op::NotEq, v),
        [v, w, s] if is_word(w, "in") => clause(s, Op::In, v),
        [s, w, v] if is_word(w, "contains") => clause(s, Op::In, v),
        [v, n, w, s] if is_word(n, "not") && is_word(w, "in") => clause(s, Op::NotIn, v),
        [s, n, w, v] if is_word(n, "not") && is_word(w, "contains") => clause(s, Op::NotIn, v),
        _ => None,
    }
}

impl Filter {
    /// Parses `text`; the error says what is not supported.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let toks = tokenize(text)?;
        if toks.is_empty() {
            return Err("empty expression".into());
        }
        let mut clauses = Vec::new();
        for part in toks.split(|t| is_word(t, "and")) {
            let Some(clause) = parse_clause(part) else {
                return Err(format!(
                    "unsupported expression {text:?} (the demo registry supports ==, !=, in, \
                     not in, contains joined by and)"
                ));
            };
            clauses.push(clause);
        }
        Ok(Self { clauses })
    }

    /// Checks every selector with `known` (error names the first unknown one).
    pub(crate) fn check_selectors(&self, known: impl Fn(&str) -> bool) -> Result<(), String> {
        match self.clauses.iter().find(|c| !known(&c.selector)) {
            Some(c) => Err(format!("Selector {:?} is not valid", c.selector)),
            None => Ok(()),
        }
    }

    /// Evaluates the filter; a selector `lookup` does not know makes its clause false.
    pub(crate) fn matches(&self, lookup: impl Fn(&str) -> Option<Field>) -> bool {
        self.clauses.iter().all(|c| {
            let Some(field) = lookup(&c.selector) else {
                return false;
            };
            let hit = match (&field, c.op) {
                (Field::Str(s), Op::Eq | Op::NotEq) => *s == c.value,
                (Field::List(_), Op::Eq | Op::NotEq) => false,
                (Field::Str(s), Op::In | Op::NotIn) => s.contains(c.value.as_str()),
                (Field::List(l), Op::In | Op::NotIn) => l.contains(&c.value),
            };
            match c.op {
                Op::Eq | Op::In => hit,
                Op::NotEq | Op::NotIn => !hit,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(sel: &str) -> Option<Field> {
        match sel {
            "Service.Meta.version" => Some(Field::Str("v2".into())),
            "Service.Tags" => Some(Field::List(vec!["v2".into(), "canary".into()])),
            "ServiceKind" => Some(Field::Str(String::new())),
            _ => None,
        }
    }

    #[test]
    fn parses_and_evaluates_the_forms_consul_docs_use() {
        let yes = [
            "Service.Meta.version == v2",
            "Service.Meta.version == \"v2\"",
            "Service.Meta.version==`v2`",
            "\"v2\" in Service.Tags",
            "Service.Tags contains canary",
            "\"v1\" not in Service.Tags",
            "ServiceKind != \"connect-proxy\"",
            "Service.Meta.version == v2 and \"canary\" in Service.Tags",
        ];
        for f in yes {
            assert!(Filter::parse(f).unwrap().matches(lookup), "{f}");
        }
        let no = [
            "Service.Meta.version == v1",
            "\"v1\" in Service.Tags",
            "Service.Meta.version != v2",
            "Service.Meta.version == v2 and \"v1\" in Service.Tags",
            "Unknown.Selector == x",
        ];
        for f in no {
            assert!(!Filter::parse(f).unwrap().matches(lookup), "{f}");
        }
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        for f in [
            "",
            "a == b or c == d",
            "(a == b)",
            "a = b",
            "\"open",
            "a ==",
        ] {
            assert!(Filter::parse(f).is_err(), "{f}");
        }
        let f = Filter::parse("Nope.X == 1").unwrap();
        assert_eq!(
            f.check_selectors(|s| s.starts_with("Service.")),
            Err("Selector \"Nope.X\" is not valid".into())
        );
    }
}
