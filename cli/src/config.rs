//! Where the connection settings come from: flags and environment, `cli.toml`, defaults.
//!
//! Precedence is flag > environment > config file > default. clap merges a flag with its
//! environment variable; [`resolve`] then fills what is still missing from the file and the
//! defaults. Nothing here reads the process environment: [`ProcessEnv::capture`] does, once,
//! in `main`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::credential::{Secret, TokenSource};
use crate::error::CliError;

/// The coordinator a `berth` with no settings talks to.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7400";

/// `cli.toml`: defaults for one operator or runner, below flags and environment.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Coordinator URL, e.g. `https://berth.example.org:7400`.
    pub coordinator: Option<String>,
    /// File holding the bearer token. A relative path is relative to the config file.
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the coordinator's certificate. Relative as `token_file`.
    pub ca_file: Option<PathBuf>,
}

impl FileConfig {
    /// Parses `cli.toml`; relative paths in it are taken relative to `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Self, toml::de::Error> {
        let mut config: FileConfig = toml::from_str(text)?;
        config.token_file = config.token_file.map(|p| dir.join(p));
        config.ca_file = config.ca_file.map(|p| dir.join(p));
        Ok(config)
    }
}

/// The values flags (or their environment variables, as clap merged them) gave.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Given {
    pub coordinator: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

/// What the process environment supplies besides flags: read once by `main`, passed in.
#[derive(Debug, Clone, Default)]
pub struct ProcessEnv {
    /// BERTH_TOKEN: the token itself. Never a flag, so it stays out of `ps`.
    pub token: Option<Secret>,
    /// XDG_CONFIG_HOME, for the default config file.
    pub xdg_config_home: Option<OsString>,
    /// HOME, for the default config file when XDG_CONFIG_HOME is unset.
    pub home: Option<OsString>,
    /// Whether stdout is a terminal: `watch` then draws a live view instead of plain lines.
    pub stdout_is_terminal: bool,
}

impl ProcessEnv {
    /// Reads BERTH_TOKEN, XDG_CONFIG_HOME and HOME from this process's environment, and
    /// whether its stdout is a terminal.
    pub fn capture() -> Self {
        Self {
            token: std::env::var("BERTH_TOKEN").ok().map(Secret::new),
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME"),
            home: std::env::var_os("HOME"),
            stdout_is_terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        }
    }

    /// `$XDG_CONFIG_HOME/berth/cli.toml`, else `$HOME/.config/berth/cli.toml`. XDG_CONFIG_HOME
    /// counts only when it is an absolute path, as the XDG spec says.
    pub fn default_config_path(&self) -> Option<PathBuf> {
        let base = match &self.xdg_config_home {
            Some(x) if Path::new(x).is_absolute() => PathBuf::from(x),
            _ => Path::new(self.home.as_ref().filter(|h| !h.is_empty())?).join(".config"),
        };
        Some(base.join("berth").join("cli.toml"))
    }
}

/// The settings a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub coordinator: String,
    pub token: TokenSource,
    pub ca_file: Option<PathBuf>,
}

/// Applies precedence: given (flag or environment) > file > default. A token file given by
/// flag or BERTH_TOKEN_FILE wins over BERTH_TOKEN, which wins over the file's `token_file`.
pub fn resolve(given: Given, env_token: Option<Secret>, file: FileConfig) -> Settings {
    let coordinator = given
        .coordinator
        .or(file.coordinator)
        .unwrap_or_else(|| DEFAULT_COORDINATOR.to_owned());
    let token = match (given.token_file, env_token, file.token_file) {
        (Some(path), _, _) => TokenSource::File(path),
        (None, Some(secret), _) => TokenSource::Env(secret),
        (None, None, Some(path)) => TokenSource::File(path),
        (None, None, None) => TokenSource::None,
    };
    Settings {
        coordinator,
        token,
        ca_file: given.ca_file.or(file.ca_file),
    }
}

/// Loads the config file: `explicit` (--config or BERTH_CONFIG) must exist; the default path
/// is read only if it exists.
pub fn load(explicit: Option<&Path>, env: &ProcessEnv) -> Result<FileConfig, CliError> {
    let (path, required) = match explicit {
        Some(p) => (p.to_owned(), true),
        None => match env.default_config_path() {
            Some(p) => (p, false),
            None => return Ok(FileConfig::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(FileConfig::default());
        }
        Err(e) => {
            return Err(CliError::Config {
                path,
                message: format!("cannot read it: {e}; check --config or BERTH_CONFIG"),
            });
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    FileConfig::parse(&text, dir).map_err(|e| CliError::Config {
        message: e.message().to_owned(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(coordinator: &str, token_file: &str, ca_file: &str) -> FileConfig {
        FileConfig {
            coordinator: Some(coordinator.into()),
            token_file: Some(token_file.into()),
            ca_file: Some(ca_file.into()),
        }
    }

    #[test]
    fn given_values_win_over_the_file() {
        let given = Given {
            coordinator: Some("https://flag:1".into()),
            token_file: Some("/flag/token".into()),
            ca_file: Some("/flag/ca.pem".into()),
        };
        let s = resolve(
            given,
            Some(Secret::new("env")),
            file("https://file:1", "/file/token", "/file/ca.pem"),
        );
        assert_eq!(s.coordinator, "https://flag:1");
        assert_eq!(s.token, TokenSource::File("/flag/token".into()));
        assert_eq!(s.ca_file, Some("/flag/ca.pem".into()));
    }

    #[test]
    fn env_token_wins_over_the_files_token_file() {
        let s = resolve(
            Given::default(),
            Some(Secret::new("env")),
            file("https://file:1", "/file/token", "/file/ca.pem"),
        );
        assert_eq!(s.token, TokenSource::Env(Secret::new("env")));
        assert_eq!(s.coordinator, "https://file:1");
        assert_eq!(s.ca_file, Some("/file/ca.pem".into()));
    }

    #[test]
    fn the_file_fills_what_was_not_given() {
        let given = Given {
            coordinator: Some("http://flag:1".into()),
            ..Given::default()
        };
        let s = resolve(given, None, file("https://file:1", "/file/token", "/ca"));
        assert_eq!(s.coordinator, "http://flag:1");
        assert_eq!(s.token, TokenSource::File("/file/token".into()));
        assert_eq!(s.ca_file, Some("/ca".into()));
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = resolve(Given::default(), None, FileConfig::default());
        assert_eq!(
            s,
            Settings {
                coordinator: DEFAULT_COORDINATOR.into(),
                token: TokenSource::None,
                ca_file: None,
            }
        );
    }

    #[test]
    fn config_file_paths_are_relative_to_it_and_unknown_keys_are_refused() {
        let c = FileConfig::parse(
            "coordinator = \"https://c:7400\"\ntoken_file = \"token\"\nca_file = \"/etc/ca.pem\"\n",
            Path::new("/home/u/.config/berth"),
        )
        .unwrap();
        assert_eq!(c.token_file, Some("/home/u/.config/berth/token".into()));
        assert_eq!(c.ca_file, Some("/etc/ca.pem".into()));
        let e = FileConfig::parse("coordinatr = \"x\"\n", Path::new("/")).unwrap_err();
        assert!(e.message().contains("unknown field"), "{e}");
    }

    #[test]
    fn default_config_path_follows_xdg() {
        let env = ProcessEnv {
            xdg_config_home: Some("/x".into()),
            home: Some("/home/u".into()),
            ..ProcessEnv::default()
        };
        assert_eq!(env.default_config_path(), Some("/x/berth/cli.toml".into()));
        let env = ProcessEnv {
            xdg_config_home: Some("relative".into()),
            home: Some("/home/u".into()),
            ..ProcessEnv::default()
        };
        assert_eq!(
            env.default_config_path(),
            Some("/home/u/.config/berth/cli.toml".into())
        );
        assert_eq!(ProcessEnv::default().default_config_path(), None);
    }

    #[test]
    fn a_missing_default_file_is_fine_but_a_missing_explicit_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let env = ProcessEnv {
            xdg_config_home: Some(dir.path().into()),
            ..ProcessEnv::default()
        };
        assert_eq!(load(None, &env).unwrap(), FileConfig::default());
        let missing = dir.path().join("nope.toml");
        let e = load(Some(&missing), &env).unwrap_err();
        assert!(matches!(e, CliError::Config { .. }), "{e}");

        std::fs::create_dir_all(dir.path().join("berth")).unwrap();
        std::fs::write(
            dir.path().join("berth/cli.toml"),
            "coordinator = \"http://from-file:1\"\n",
        )
        .unwrap();
        assert_eq!(
            load(None, &env).unwrap().coordinator.as_deref(),
            Some("http://from-file:1")
        );
    }
}
