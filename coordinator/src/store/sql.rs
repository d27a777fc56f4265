//! A small SQL builder for the few queries whose shape depends on their inputs. It numbers
//! placeholders `$1, $2, …`, which SQLite and PostgreSQL both accept (sqlx's `QueryBuilder`
//! for the `Any` driver writes `?`, which PostgreSQL refuses).

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe};

enum Arg {
    Int(i64),
    Text(String),
}

/// SQL text with its bound values, in order.
#[derive(Default)]
pub(crate) struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: &str) -> Sql {
        Sql {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends trusted SQL text (never user input).
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn placeholder(&mut self, arg: Arg) -> &mut Self {
        self.args.push(arg);
        let n = self.args.len();
        self.text.push_str(&format!("${n}"));
        self
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        self.placeholder(Arg::Int(v))
    }

    pub fn text(&mut self, v: &str) -> &mut Self {
        self.placeholder(Arg::Text(v.to_owned()))
    }

    /// `(p1, p2, …)` for an `IN` list; an empty list matches nothing.
    pub fn text_list<S: AsRef<str>>(&mut self, items: &[S]) -> &mut Self {
        if items.is_empty() {
            return self.push("(NULL)");
        }
        self.push("(");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.text(item.as_ref());
        }
        self.push(")")
    }

    /// The query with every value bound.
    pub fn query(&self) -> Query<'_, Any, AnyArguments> {
        let mut q = sqlx::query(AssertSqlSafe(self.text.as_str()));
        for a in &self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_str()),
            };
        }
        q
    }
}
