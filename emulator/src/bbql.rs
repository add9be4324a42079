//! A tiny BBQL (Bitbucket query language) parser and evaluator.
//!
//! Grammar (keywords case-insensitive):
//! ```text
//! expr    := and ( OR and )*
//! and     := unary ( AND unary )*
//! unary   := NOT unary | primary
//! primary := '(' expr ')' | field op value | field [NOT] IN '(' value (',' value)* ')'
//! op      := = | != | ~ | !~ | > | >= | < | <=
//! value   := "double-quoted string" | number | true | false | null
//! field   := identifier ( '.' identifier )*
//! ```
//! `~` is a case-insensitive "contains". Unknown fields are rejected by [`Query::parse`]
//! against the collection's field list.

/// Comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Contains,
    NotContains,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `value` None = `null`.
    Cmp {
        field: String,
        op: Op,
        value: Option<String>,
    },
    In {
        field: String,
        values: Vec<String>,
        negated: bool,
    },
}

/// How a field compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// Exact `=`, lexicographic ordering.
    Text,
    /// Case-insensitive `=` (email addresses).
    CaseInsensitive,
    /// Ordered read < write < admin (`permission > "read"`).
    Permission,
}

/// A field a collection can be filtered on.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    pub name: &'static str,
    pub kind: FieldKind,
}

/// Why a query was refused (answered 400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BbqlError {
    Syntax(String),
    UnknownField(String),
}

impl std::fmt::Display for BbqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BbqlError::Syntax(m) => write!(f, "Invalid query: {m}"),
            BbqlError::UnknownField(name) => write!(f, "Invalid field name '{name}'"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Str(String),
    Word(String),
    Op(Op),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, BbqlError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                let mut closed = false;
                while i < chars.len() {
                    match chars[i] {
                        '\\' if i + 1 < chars.len() => {
                            v.push(chars[i + 1]);
                            i += 2;
                        }
                        '"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        ch => {
                            v.push(ch);
                            i += 1;
                        }
                    }
                }
                if !closed {
                    return Err(BbqlError::Syntax("unterminated string".into()));
                }
                out.push(Tok::Str(v));
            }
            '=' => {
                out.push(Tok::Op(Op::Eq));
                i += 1
            }
            '~' => {
                out.push(Tok::Op(Op::Contains));
                i += 1
            }
            '!' => match chars.get(i + 1) {
                Some('=') => {
                    out.push(Tok::Op(Op::Ne));
                    i += 2
                }
                Some('~') => {
                    out.push(Tok::Op(Op::NotContains));
                    i += 2
                }
                _ => return Err(BbqlError::Syntax(format!("unexpected '!' at {i}"))),
            },
            '>' | '<' => {
                let eq = chars.get(i + 1) == Some(&'=');
                let op = match (c, eq) {
                    ('>', false) => Op::Gt,
                    ('>', true) => Op::Ge,
                    ('<', false) => Op::Lt,
                    _ => Op::Le,
                };
                out.push(Tok::Op(op));
                i += if eq { 2 } else { 1 };
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' || c == '-' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-' | ':'))
                {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
            other => {
                return Err(BbqlError::Syntax(format!(
                    "unexpected character '{other}' at {i}"
                )))
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

fn is_kw(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expr(&mut self) -> Result<Expr, BbqlError> {
        let mut left = self.and()?;
        while is_kw(self.peek(), "OR") {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, BbqlError> {
        let mut left = self.unary()?;
        while is_kw(self.peek(), "AND") {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, BbqlError> {
        if is_kw(self.peek(), "NOT") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn value(&mut self) -> Result<Option<String>, BbqlError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Some(s)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(None),
            Some(Tok::Word(w))
                if w.eq_ignore_ascii_case("true")
                    || w.eq_ignore_ascii_case("false")
                    || w.parse::<f64>().is_ok() =>
            {
                Ok(Some(w.to_lowercase()))
            }
            Some(t) => Err(BbqlError::Syntax(format!("expected a value, got {t:?}"))),
            None => Err(BbqlError::Syntax(
                "expected a value, got end of query".into(),
            )),
        }
    }

    fn primary(&mut self) -> Result<Expr, BbqlError> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.expr()?;
                match self.next() {
                    Some(Tok::RParen) => Ok(e),
                    _ => Err(BbqlError::Syntax("expected ')'".into())),
                }
            }
            Some(Tok::Word(field)) => {
                if ["AND", "OR", "NOT", "IN"]
                    .iter()
                    .any(|k| field.eq_ignore_ascii_case(k))
                    || !field
                        .chars()
                        .next()
                        .map(|c| c.is_alphabetic() || c == '_')
                        .unwrap_or(false)
                {
                    return Err(BbqlError::Syntax(format!("expected a field, got {field}")));
                }
                let negated = if is_kw(self.peek(), "NOT") {
                    self.pos += 1;
                    if !is_kw(self.peek(), "IN") {
                        return Err(BbqlError::Syntax("expected IN after NOT".into()));
                    }
                    true
                } else {
                    false
                };
                if is_kw(self.peek(), "IN") {
                    self.pos += 1;
                    if self.next() != Some(Tok::LParen) {
                        return Err(BbqlError::Syntax("expected '(' after IN".into()));
                    }
                    let mut values = Vec::new();
                    loop {
                        match self.value()? {
                            Some(v) => values.push(v),
                            None => {
                                return Err(BbqlError::Syntax("null is not allowed in IN".into()))
                            }
                        }
                        match self.next() {
                            Some(Tok::Comma) => continue,
                            Some(Tok::RParen) => break,
                            _ => return Err(BbqlError::Syntax("expected ',' or ')'".into())),
                        }
                    }
                    return Ok(Expr::In {
                        field,
                        values,
                        negated,
                    });
                }
                let op = match self.next() {
                    Some(Tok::Op(op)) => op,
                    Some(t) => {
                        return Err(BbqlError::Syntax(format!(
                            "expected an operator after {field}, got {t:?}"
                        )))
                    }
                    None => {
                        return Err(BbqlError::Syntax(format!(
                            "expected an operator after {field}"
                        )))
                    }
                };
                let value = self.value()?;
                Ok(Expr::Cmp { field, op, value })
            }
            Some(t) => Err(BbqlError::Syntax(format!("unexpected {t:?}"))),
            None => Err(BbqlError::Syntax("unexpected end of query".into())),
        }
    }
}

/// A parsed, field-checked query.
#[derive(Clone, Debug)]
pub struct Query {
    pub expr: Expr,
    specs: Vec<FieldSpec>,
}

fn collect_fields<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            collect_fields(a, out);
            collect_fields(b, out);
        }
        Expr::Not(a) => collect_fields(a, out),
        Expr::Cmp { field, .. } | Expr::In { field, .. } => out.push(field),
    }
}

fn collect_values<'a>(e: &'a Expr, name: &str, out: &mut Vec<&'a str>) {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            collect_values(a, name, out);
            collect_values(b, name, out);
        }
        Expr::Not(a) => collect_values(a, name, out),
        Expr::Cmp {
            field,
            value: Some(v),
            op: Op::Eq,
        } if field == name => out.push(v),
        Expr::In {
            field,
            values,
            negated: false,
        } if field == name => out.extend(values.iter().map(String::as_str)),
        Expr::Cmp { .. } | Expr::In { .. } => {}
    }
}

fn perm_rank(s: &str) -> i32 {
    match s {
        "read" => 1,
        "write" => 2,
        "create-repo" => 2,
        "admin" => 3,
        _ => 0,
    }
}

impl Query {
    /// Parses `q` (already URL-decoded) and checks every field against `specs`.
    pub fn parse(q: &str, specs: &[FieldSpec]) -> Result<Query, BbqlError> {
        let toks = tokenize(q)?;
        if toks.is_empty() {
            return Err(BbqlError::Syntax("empty query".into()));
        }
        let mut p = Parser { toks, pos: 0 };
        let expr = p.expr()?;
        if p.pos < p.toks.len() {
            return Err(BbqlError::Syntax(format!("unexpected {:?}", p.toks[p.pos])));
        }
        let mut fields = Vec::new();
        collect_fields(&expr, &mut fields);
        for f in fields {
            if !specs.iter().any(|s| s.name == f) {
                return Err(BbqlError::UnknownField(f.to_string()));
            }
        }
        Ok(Query {
            expr,
            specs: specs.to_vec(),
        })
    }

    /// Every value the query compares `field` to with `=` or `IN` (not negated).
    pub fn equality_values(&self, field: &str) -> Vec<String> {
        let mut out = Vec::new();
        collect_values(&self.expr, field, &mut out);
        out.into_iter().map(str::to_string).collect()
    }

    /// Every field the query names.
    pub fn fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_fields(&self.expr, &mut out);
        out.into_iter().map(str::to_string).collect()
    }

    /// Evaluates the query for one item; `get` returns the item's value of a field.
    pub fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.eval(&self.expr, get)
    }

    fn kind(&self, field: &str) -> FieldKind {
        self.specs
            .iter()
            .find(|s| s.name == field)
            .map(|s| s.kind)
            .unwrap_or(FieldKind::Text)
    }

    fn equal(kind: FieldKind, a: &str, b: &str) -> bool {
        match kind {
            FieldKind::CaseInsensitive => a.eq_ignore_ascii_case(b),
            _ => a == b,
        }
    }

    fn eval(&self, e: &Expr, get: &dyn Fn(&str) -> Option<String>) -> bool {
        match e {
            Expr::And(a, b) => self.eval(a, get) && self.eval(b, get),
            Expr::Or(a, b) => self.eval(a, get) || self.eval(b, get),
            Expr::Not(a) => !self.eval(a, get),
            Expr::In {
                field,
                values,
                negated,
            } => {
                let kind = self.kind(field);
                let found = match get(field) {
                    Some(v) => values.iter().any(|x| Self::equal(kind, &v, x)),
                    None => false,
                };
                found != *negated
            }
            Expr::Cmp { field, op, value } => {
                let kind = self.kind(field);
                let actual = get(field);
                match (op, value, actual) {
                    (Op::Eq, None, a) => a.is_none(),
                    (Op::Ne, None, a) => a.is_some(),
                    (_, None, _) => false,
                    (Op::Eq, Some(v), Some(a)) => Self::equal(kind, &a, v),
                    (Op::Eq, Some(_), None) => false,
                    (Op::Ne, Some(v), Some(a)) => !Self::equal(kind, &a, v),
                    (Op::Ne, Some(_), None) => true,
                    (Op::Contains, Some(v), Some(a)) => {
                        a.to_lowercase().contains(&v.to_lowercase())
                    }
                    (Op::NotContains, Some(v), Some(a)) => {
                        !a.to_lowercase().contains(&v.to_lowercase())
                    }
                    (Op::NotContains, Some(_), None) => true,
                    (_, Some(_), None) => false,
                    (op, Some(v), Some(a)) => {
                        let ord = if kind == FieldKind::Permission {
                            perm_rank(&a).cmp(&perm_rank(v))
                        } else {
                            a.as_str().cmp(v.as_str())
                        };
                        match op {
                            Op::Gt => ord.is_gt(),
                            Op::Ge => ord.is_ge(),
                            Op::Lt => ord.is_lt(),
                            _ => ord.is_le(),
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SPECS: &[FieldSpec] = &[
        FieldSpec {
            name: "project.key",
            kind: FieldKind::Text,
        },
        FieldSpec {
            name: "slug",
            kind: FieldKind::Text,
        },
        FieldSpec {
            name: "user.email",
            kind: FieldKind::CaseInsensitive,
        },
        FieldSpec {
            name: "permission",
            kind: FieldKind::Permission,
        },
    ];

    fn item(field: &str) -> Option<String> {
        match field {
            "project.key" => Some("PROJ".into()),
            "slug" => Some("api-server".into()),
            "user.email" => Some("Ann@Acme.test".into()),
            "permission" => Some("write".into()),
            _ => None,
        }
    }

    fn m(q: &str) -> bool {
        Query::parse(q, SPECS).unwrap().matches(&item)
    }

    #[test]
    fn comparisons() {
        assert!(m(r#"project.key = "PROJ""#));
        assert!(!m(r#"project.key = "proj""#));
        assert!(m(r#"project.key != "X""#));
        assert!(m(r#"slug ~ "SERVER""#));
        assert!(m(r#"slug !~ "web""#));
        assert!(m(r#"permission > "read""#));
        assert!(!m(r#"permission > "write""#));
        assert!(m(r#"permission >= "write""#));
        assert!(m(r#"user.email = "ann@acme.test""#));
    }

    #[test]
    fn boolean_logic() {
        assert!(m(r#"project.key = "X" or slug = "api-server""#));
        assert!(!m(r#"project.key = "X" AND slug = "api-server""#));
        assert!(m(
            r#"(project.key = "X" OR project.key = "PROJ") AND slug ~ "api""#
        ));
        assert!(m(r#"NOT project.key = "X""#));
    }

    #[test]
    fn in_lists() {
        let q = Query::parse(r#"user.email IN ("a@x", "ANN@acme.test")"#, SPECS).unwrap();
        assert!(q.matches(&item));
        assert_eq!(q.equality_values("user.email").len(), 2);
        assert!(!m(r#"user.email NOT IN ("ann@acme.test")"#));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Query::parse(r#"foo = "x""#, SPECS).unwrap_err(),
            BbqlError::UnknownField("foo".into())
        );
        assert!(matches!(
            Query::parse(r#"slug = "x"#, SPECS),
            Err(BbqlError::Syntax(_))
        ));
        assert!(matches!(
            Query::parse(r#"slug "x""#, SPECS),
            Err(BbqlError::Syntax(_))
        ));
        assert!(matches!(
            Query::parse(r#"slug = "x" AND"#, SPECS),
            Err(BbqlError::Syntax(_))
        ));
        assert!(matches!(
            Query::parse(r#"(slug = "x""#, SPECS),
            Err(BbqlError::Syntax(_))
        ));
        assert!(matches!(Query::parse("", SPECS), Err(BbqlError::Syntax(_))));
    }
}
