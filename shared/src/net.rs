//! Which coordinator URLs may be dialled in plaintext: only loopback ones (`127.0.0.0/8`,
//! `::1`, `localhost`), so a bearer token never crosses a network unencrypted.

use std::net::IpAddr;

/// An `http://` URL whose host is not loopback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{url:?} is plaintext http to {host}, which is not loopback: a token sent there crosses the \
     network unencrypted; use https:// with the coordinator's CA (or http:// only to 127.0.0.1, \
     ::1 or localhost)"
)]
pub struct PlaintextNotLoopback {
    pub url: String,
    pub host: String,
}

/// The host of a URL (`scheme://[user@]host[:port][/path]`), brackets of an IPv6 literal
/// removed; `None` when the URL has no `://`.
pub fn url_host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(hostport.split_once(':').map_or(hostport, |(h, _)| h))
}

/// The `host:port` a URL dials (`scheme://[user@]host[:port][/path]`), with the scheme's
/// default port (`http` 80, `https` 443) when it names none; `None` for another scheme.
pub fn url_address(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let has_port = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").is_some(),
        None => hostport.rsplit_once(':').is_some(),
    };
    Some(if has_port {
        hostport.to_owned()
    } else {
        format!("{hostport}:{default}")
    })
}

/// What a failed TLS handshake was, told from rustls's words in its error; each side words
/// its own message from this (the coordinator for its peer, the agent and CLI for theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// This side refused the peer's certificate (`invalid peer certificate: …`).
    PeerCertificate,
    /// The peer does not speak TLS (`InvalidContentType`, `corrupt message`).
    NotTls,
    /// The peer ended the handshake with an alert: it refused this side's certificate.
    AlertFromPeer,
    /// The peer hung up mid-handshake (`tls handshake eof`).
    Closed,
}

impl TlsFailure {
    pub fn of(error: &str) -> Option<TlsFailure> {
        if error.contains("invalid peer certificate") {
            Some(TlsFailure::PeerCertificate)
        } else if error.contains("InvalidContentType") || error.contains("corrupt message") {
            Some(TlsFailure::NotTls)
        } else if error.contains("received fatal alert") {
            Some(TlsFailure::AlertFromPeer)
        } else if error.contains("handshake eof") {
            Some(TlsFailure::Closed)
        } else {
            None
        }
    }
}

/// Whether `host` names this machine: `localhost` (or a name under it), `127.0.0.0/8`, `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    })
}

/// Refuses an `http://` URL to anything but loopback; other schemes pass (they are checked
/// elsewhere).
pub fn check_plaintext(url: &str) -> Result<(), PlaintextNotLoopback> {
    let url = url.trim();
    if !url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
    {
        return Ok(());
    }
    let host = url_host(url).unwrap_or_default();
    if is_loopback_host(host) {
        Ok(())
    } else {
        Err(PlaintextNotLoopback {
            url: url.to_owned(),
            host: if host.is_empty() {
                "(no host)".to_owned()
            } else {
                host.to_owned()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::url_address;

    #[test]
    fn a_url_s_address_has_its_port_or_the_scheme_s() {
        assert_eq!(
            url_address("http://127.0.0.1:7400").as_deref(),
            Some("127.0.0.1:7400")
        );
        assert_eq!(
            url_address("https://c.example/x").as_deref(),
            Some("c.example:443")
        );
        assert_eq!(url_address("http://[::1]/").as_deref(), Some("[::1]:80"));
        assert_eq!(url_address("https://[::1]:9").as_deref(), Some("[::1]:9"));
        assert_eq!(url_address("unix:///run/x"), None);
    }

    use super::*;

    #[test]
    fn loopback_urls_may_be_plaintext() {
        for ok in [
            "http://127.0.0.1:7400",
            "http://127.9.8.7:1/x",
            "http://[::1]:7400",
            "http://localhost:7400",
            "http://LOCALHOST.",
            "https://coordinator.example.org:7400",
            "http://user@127.0.0.1:1",
        ] {
            check_plaintext(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn other_plaintext_urls_are_refused_naming_the_fix() {
        for bad in [
            "http://10.0.0.5:7400",
            "http://coordinator.example.org",
            "http://localhost.evil.org:1",
            "http://127.0.0.1.evil.org:1",
            "http://[2001:db8::1]:7400",
            "http://127.0.0.1@10.0.0.5:7400",
            "HTTP://10.0.0.5",
        ] {
            let err = check_plaintext(bad).unwrap_err().to_string();
            assert!(
                err.contains("https://") && err.contains("loopback"),
                "{bad}: {err}"
            );
        }
    }
}
