//! `[alerts]`: where alerts are posted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use berth_shared::Secret;
use berth_shared::config_doc::ConfigDoc;
use serde::Deserialize;

/// The alert webhook (`[alerts]`). Without `webhook_url`, alerts are queued in the database
/// and never sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// A file holding the URL alerts are POSTed to (`https://…`); a file because chat
    /// webhooks carry their credential in the URL.
    pub webhook_url_file: Option<PathBuf>,
    /// The URL itself, when it holds no credential. Ignored when `webhook_url_file` is set.
    pub webhook_url: Option<String>,
    /// A file holding the HMAC key of the `X-Berth-Signature` header. Required with a URL.
    pub webhook_secret_file: Option<PathBuf>,
    /// How long one delivery attempt may take, in seconds (default 10).
    #[config(default_text = "10")]
    pub timeout_secs: Option<u64>,
    /// Delivered alerts are forgotten this many days after delivery (default 30).
    #[config(default_text = "30")]
    pub keep_delivered_days: Option<u64>,
}

fn read(what: &str, path: &std::path::Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read [alerts] {what} {}: {e}", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("[alerts] {what} {} is empty", path.display()));
    }
    Ok(Secret::new(text))
}

impl AlertConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        let has_url = self.webhook_url_file.is_some() || self.webhook_url.is_some();
        if has_url && self.webhook_secret_file.is_none() {
            bail!(
                "[alerts] needs webhook_secret_file with a webhook URL: alerts are signed \
                 (create one with `openssl rand -hex 32 > /etc/berth/secrets/alert-webhook-secret`)"
            );
        }
        if !has_url && self.webhook_secret_file.is_some() {
            bail!("[alerts] webhook_secret_file is set but no webhook_url or webhook_url_file");
        }
        if let Some(url) = &self.webhook_url {
            check_url(url).map_err(anyhow::Error::msg)?;
        }
        if self.timeout_secs == Some(0) {
            bail!("[alerts] timeout_secs must be at least 1");
        }
        Ok(())
    }

    /// How long a delivered alert is kept.
    pub fn keep_delivered(&self) -> Duration {
        Duration::from_secs(self.keep_delivered_days.unwrap_or(30) * 86_400)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.unwrap_or(10))
    }

    /// The URL and the signing key, read from their files; `None` when no webhook is set.
    pub(super) fn webhook(&self) -> Result<Option<(Secret, Secret)>, String> {
        let url = match (&self.webhook_url_file, &self.webhook_url) {
            (Some(path), _) => read("webhook_url_file", path)?,
            (None, Some(url)) => Secret::new(url.clone()),
            (None, None) => return Ok(None),
        };
        check_url(url.expose())?;
        let Some(secret) = &self.webhook_secret_file else {
            return Err("[alerts] needs webhook_secret_file with a webhook URL".into());
        };
        Ok(Some((url, read("webhook_secret_file", secret)?)))
    }
}

/// An `http(s)://` URL; the error never repeats it (it may hold a credential).
fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => Ok(()),
        _ => Err("[alerts] the webhook URL must be an http:// or https:// URL".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_needs_a_signing_key_and_a_real_url() {
        let mut c = AlertConfig {
            webhook_url: Some("https://hooks.example.org/berth".into()),
            ..AlertConfig::default()
        };
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("webhook_secret_file")
        );
        c.webhook_secret_file = Some("/run/credentials/x/alert-secret".into());
        c.check().unwrap();
        c.webhook_url = Some("ftp://token@example.org/x".into());
        let err = c.check().unwrap_err().to_string();
        assert!(err.contains("http"), "{err}");
        assert!(!err.contains("token@"), "{err}");
        AlertConfig::default().check().unwrap();
    }
}
