//! Database URLs made fit for logs and errors, whatever their shape: a password in the
//! userinfo (even one holding `@`, `:` or `/`), in the query (`?password=…`), or in a
//! libpq key=value string (`host=h password='p w'`) is replaced by `***`.

/// Query and key=value parameters whose values are secrets (compared case-insensitively).
const SECRET_KEYS: &[&str] = &[
    "password",
    "pass",
    "passwd",
    "pwd",
    "sslpassword",
    "secret",
    "token",
];

fn is_secret_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    SECRET_KEYS.contains(&key.as_str())
}

/// The URL with any password replaced.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", redact_after_scheme(rest)),
        None => redact_key_values(url),
    }
}

/// `user:pass@host/db?params`: the userinfo ends at the last `@` before the query (a password
/// may hold `@` and `/`); its password and every secret parameter are replaced.
fn redact_after_scheme(rest: &str) -> String {
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let mut out = match before_query.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => before_query.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    out
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_key(&percent_decoded(k)) => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Enough percent-decoding to recognize a key spelt `pass%77ord`.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A libpq key=value string: `password=secret`, `password = 'it''s \' secret'`.
fn redact_key_values(dsn: &str) -> String {
    let mut out = String::with_capacity(dsn.len());
    let mut rest = dsn;
    while let Some(eq) = rest.find('=') {
        let (head, tail) = rest.split_at(eq);
        let key = head
            .rsplit(|c: char| c.is_whitespace())
            .find(|k| !k.is_empty())
            .unwrap_or("");
        let secret = is_secret_key(key);
        out.push_str(head);
        out.push('=');
        let value = tail[1..].trim_start();
        out.push_str(&tail[1..tail.len() - value.len()]);
        let len = value_len(value);
        if secret {
            out.push_str("***");
        } else {
            out.push_str(&value[..len]);
        }
        rest = &value[len..];
    }
    out.push_str(rest);
    out
}

/// The length of a key=value string's value at the start of `s`: quoted (with `\'` and `''`
/// escapes) or up to the next whitespace.
fn value_len(s: &str) -> usize {
    if !s.starts_with('\'') {
        return s.find(char::is_whitespace).unwrap_or(s.len());
    }
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted_whatever_the_shape() {
        let cases = [
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://user:p@ss@h/db", "postgres://user:***@h/db"),
            ("postgresql://user:a/b:c@h/db", "postgresql://user:***@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("sqlite:///x.db", "sqlite:///x.db"),
            ("sqlite:///x.db?mode=rwc", "sqlite:///x.db?mode=rwc"),
            (
                "postgres://h/db?user=u&password=s3cret&sslmode=require",
                "postgres://h/db?user=u&password=***&sslmode=require",
            ),
            (
                "postgres://h/db?PASSWORD=s3cret",
                "postgres://h/db?PASSWORD=***",
            ),
            (
                "postgres://h/db?pass%77ord=s3cret",
                "postgres://h/db?pass%77ord=***",
            ),
            (
                "postgres://u:x@h/db?sslpassword=k3y",
                "postgres://u:***@h/db?sslpassword=***",
            ),
            (
                "host=h user=u password=s3cret dbname=d",
                "host=h user=u password=*** dbname=d",
            ),
            (
                "host=h password = 'it''s a \\' s3cret' dbname=d",
                "host=h password = *** dbname=d",
            ),
        ];
        for (url, want) in cases {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            assert!(!got.contains("s3cret") && !got.contains("secret@"), "{got}");
        }
    }
}
