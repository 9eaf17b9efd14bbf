//! Node settings from a TOML file and `MALLA_*` environment variables, for
//! deployments: the file first, the environment over it, and the builder
//! over both.
//!
//! ```toml
//! name = "api-1"
//! cookie_file = "/run/secrets/malla-cookie"   # or: cookie = "…"
//! listen = "0.0.0.0:7000"
//! advertise = "10.0.0.7:7000"
//! connect = ["_malla._tcp.example.com", "malla-headless.default.svc:7000"]
//! gossip_interval_ms = 500
//! reconnect_interval_ms = 5000
//! hidden = false
//! dns_servers = ["10.0.0.2:53"]
//! also_accept_cookie_files = ["/run/secrets/malla-cookie-old"]   # during a cookie roll
//! sealing = true
//! max_handlers_per_connection = 1024
//! max_handshakes = 256
//! max_handshakes_per_source = 32
//! voter = 3                                   # a voter of the consensus group, bootstrapping with 3
//! data_dir = "/var/lib/malla/api-1"           # its log and snapshots survive restarts
//! ```
//!
//! | variable | setting |
//! |---|---|
//! | `MALLA_CONFIG` | path of the file above |
//! | `MALLA_NAME`, `MALLA_COOKIE`, `MALLA_COOKIE_FILE` | name, cookie |
//! | `MALLA_LISTEN`, `MALLA_ADVERTISE` | addresses |
//! | `MALLA_CONNECT` | connect targets, comma-separated |
//! | `MALLA_GOSSIP_INTERVAL_MS`, `MALLA_RECONNECT_INTERVAL_MS` | intervals |
//! | `MALLA_HIDDEN` | `true` or `false` |
//! | `MALLA_DNS_SERVERS` | `ip:port`, comma-separated |
//! | `MALLA_ALSO_ACCEPT_COOKIE_FILES` | files of cookies also accepted, comma-separated |
//! | `MALLA_SEALING` | `true` or `false` |
//! | `MALLA_MAX_HANDLERS_PER_CONNECTION`, `MALLA_MAX_HANDSHAKES`, `MALLA_MAX_HANDSHAKES_PER_SOURCE` | limits |
//! | `MALLA_VOTER` | voters the consensus group bootstraps with, if this node is one (`0`: not a voter) |
//! | `MALLA_DATA_DIR` | where the node keeps the group's log and snapshots |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::builder::NodeBuilder;
use crate::secret::read_cookie_file;
use crate::{Error, Secret};

/// Node settings, as a deployment gives them. Every field is optional; see
/// the module documentation for the file format and the variables.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The node's name.
    pub name: Option<String>,
    /// The cluster's cookie (printed as `Secret(..)`).
    pub cookie: Option<Secret>,
    /// A file holding the cookie (trailing whitespace ignored), readable by
    /// its owner only. A layer (the file, the environment) gives `cookie`
    /// or `cookie_file`, not both; the environment's beats the file's.
    pub cookie_file: Option<PathBuf>,
    /// Address to accept connections on.
    pub listen: Option<SocketAddr>,
    /// Address other nodes reach this one at.
    pub advertise: Option<SocketAddr>,
    /// Connect targets.
    #[serde(default)]
    pub connect: Vec<String>,
    /// Gossip interval, in milliseconds.
    pub gossip_interval_ms: Option<u64>,
    /// Period of re-resolving connect targets, in milliseconds.
    pub reconnect_interval_ms: Option<u64>,
    /// Whether the node is hidden.
    pub hidden: Option<bool>,
    /// DNS servers for connect targets.
    #[serde(default)]
    pub dns_servers: Vec<SocketAddr>,
    /// Files holding cookies accepted besides the node's own, during a
    /// cookie roll (see [`NodeBuilder::also_accept_cookie`]).
    #[serde(default)]
    pub also_accept_cookie_files: Vec<PathBuf>,
    /// Whether the node seals its connections (see [`NodeBuilder::sealing`]).
    pub sealing: Option<bool>,
    /// Handlers at once per connected node.
    pub max_handlers_per_connection: Option<usize>,
    /// Incoming handshakes at once, in all.
    pub max_handshakes: Option<usize>,
    /// Incoming handshakes at once, per source address.
    pub max_handshakes_per_source: Option<usize>,
    /// Voters the consensus group bootstraps with, if this node is one
    /// (see [`NodeBuilder::voter`]).
    pub voter: Option<usize>,
    /// Where the node keeps what it must not forget (see
    /// [`NodeBuilder::data_dir`]).
    pub data_dir: Option<PathBuf>,
}

impl NodeConfig {
    /// Reads a TOML file. Errors name the file, line and column.
    pub fn from_file(path: impl AsRef<Path>) -> Result<NodeConfig, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read the config file {}: {e}", path.display())))?;
        NodeConfig::from_toml(&text, &path.display().to_string())
    }

    /// Reads TOML text; errors name `origin` (a file name), the line and the
    /// column.
    ///
    /// ```
    /// let config = malla_runtime::NodeConfig::from_toml("name = \"api\"\nlisten = \"127.0.0.1:7000\"", "inline").unwrap();
    /// assert_eq!(config.name.as_deref(), Some("api"));
    /// assert!(malla_runtime::NodeConfig::from_toml("name = 7", "inline").unwrap_err().to_string().contains("inline:1:8"));
    /// ```
    pub fn from_toml(text: &str, origin: &str) -> Result<NodeConfig, Error> {
        let config: NodeConfig = toml::from_str(text).map_err(|err| {
            let (line, column) = err.span().map_or((0, 0), |span| line_column(text, span.start));
            Error::Config(format!("{origin}:{line}:{column}: {}", err.message().trim_end()))
        })?;
        if config.cookie.is_some() && config.cookie_file.is_some() {
            return Err(Error::Config(format!(
                "{origin}: `cookie` and `cookie_file` both set: keep one"
            )));
        }
        Ok(config)
    }

    /// The file named by `MALLA_CONFIG`, if set, with the `MALLA_*` variables
    /// over it.
    pub fn from_env() -> Result<NodeConfig, Error> {
        let base = match std::env::var_os("MALLA_CONFIG") {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        base.with_env_vars(|name| std::env::var(name).ok())
    }

    /// Applies `MALLA_*` variables, looked up with `var`, over these settings.
    fn with_env_vars(mut self, var: impl Fn(&str) -> Option<String>) -> Result<NodeConfig, Error> {
        fn parse<T: std::str::FromStr>(name: &str, value: &str, what: &str) -> Result<T, Error> {
            value
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("{name}=`{value}` is not {what}")))
        }
        let list = |value: &str| -> Vec<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if let Some(v) = var("MALLA_NAME") {
            self.name = Some(v);
        }
        // Either variable replaces whatever the file said of the cookie.
        match (var("MALLA_COOKIE"), var("MALLA_COOKIE_FILE")) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "MALLA_COOKIE and MALLA_COOKIE_FILE both set: keep one (the file)".into(),
                ));
            }
            (Some(cookie), None) => (self.cookie, self.cookie_file) = (Some(cookie.into()), None),
            (None, Some(file)) => (self.cookie, self.cookie_file) = (None, Some(file.into())),
            (None, None) => {}
        }
        if let Some(v) = var("MALLA_LISTEN") {
            self.listen = Some(parse("MALLA_LISTEN", &v, "an address such as 0.0.0.0:7000")?);
        }
        if let Some(v) = var("MALLA_ADVERTISE") {
            self.advertise = Some(parse("MALLA_ADVERTISE", &v, "an address such as 10.0.0.7:7000")?);
        }
        if let Some(v) = var("MALLA_CONNECT") {
            self.connect = list(&v);
        }
        if let Some(v) = var("MALLA_GOSSIP_INTERVAL_MS") {
            self.gossip_interval_ms = Some(parse("MALLA_GOSSIP_INTERVAL_MS", &v, "a number of milliseconds")?);
        }
        if let Some(v) = var("MALLA_RECONNECT_INTERVAL_MS") {
            self.reconnect_interval_ms = Some(parse("MALLA_RECONNECT_INTERVAL_MS", &v, "a number of milliseconds")?);
        }
        let flag = |name: &str, v: &str| match v.trim() {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" | "" => Ok(false),
            _ => Err(Error::Config(format!("{name}=`{v}` is not true or false"))),
        };
        if let Some(v) = var("MALLA_HIDDEN") {
            self.hidden = Some(flag("MALLA_HIDDEN", &v)?);
        }
        if let Some(v) = var("MALLA_SEALING") {
            self.sealing = Some(flag("MALLA_SEALING", &v)?);
        }
        if let Some(v) = var("MALLA_ALSO_ACCEPT_COOKIE_FILES") {
            self.also_accept_cookie_files = list(&v).into_iter().map(PathBuf::from).collect();
        }
        for (name, setting) in [
            (
                "MALLA_MAX_HANDLERS_PER_CONNECTION",
                &mut self.max_handlers_per_connection,
            ),
            ("MALLA_MAX_HANDSHAKES", &mut self.max_handshakes),
            ("MALLA_MAX_HANDSHAKES_PER_SOURCE", &mut self.max_handshakes_per_source),
            ("MALLA_VOTER", &mut self.voter),
        ] {
            if let Some(v) = var(name) {
                *setting = Some(parse(name, &v, "a number")?);
            }
        }
        if let Some(v) = var("MALLA_DATA_DIR").filter(|v| !v.trim().is_empty()) {
            self.data_dir = Some(v.into());
        }
        if let Some(v) = var("MALLA_DNS_SERVERS") {
            self.dns_servers = list(&v)
                .iter()
                .map(|s| parse("MALLA_DNS_SERVERS", s, "a list of addresses such as 10.0.0.2:53"))
                .collect::<Result<_, _>>()?;
        }
        Ok(self)
    }

    /// A builder with these settings; its own methods override them.
    pub fn builder(self) -> Result<NodeBuilder, Error> {
        let name = self.name.ok_or_else(|| {
            Error::Config("no node name: set `name` in the config file or the MALLA_NAME environment variable".into())
        })?;
        let mut builder = NodeBuilder::new(name);
        let cookie = match (self.cookie, self.cookie_file) {
            (Some(cookie), _) => Some(cookie),
            (None, Some(file)) => Some(read_cookie_file(&file)?),
            (None, None) => None,
        };
        if let Some(cookie) = cookie {
            builder = builder.cookie(cookie);
        }
        for file in &self.also_accept_cookie_files {
            builder = builder.also_accept_cookie(read_cookie_file(file)?);
        }
        if let Some(seal) = self.sealing {
            builder = builder.sealing(seal);
        }
        if let Some(handlers) = self.max_handlers_per_connection {
            builder = builder.max_handlers_per_connection(handlers);
        }
        if self.max_handshakes.is_some() || self.max_handshakes_per_source.is_some() {
            let (total, per_source) = super::builder::DEFAULT_MAX_HANDSHAKES;
            builder = builder.max_handshakes(
                self.max_handshakes.unwrap_or(total),
                self.max_handshakes_per_source.unwrap_or(per_source),
            );
        }
        if let Some(listen) = self.listen {
            builder = builder.listen(listen);
        }
        if let Some(advertise) = self.advertise {
            builder = builder.advertise(advertise);
        }
        if let Some(ms) = self.gossip_interval_ms {
            builder = builder.gossip_interval(Duration::from_millis(ms));
        }
        if let Some(ms) = self.reconnect_interval_ms {
            builder = builder.reconnect_interval(Duration::from_millis(ms));
        }
        if self.hidden == Some(true) {
            builder = builder.hidden();
        }
        if !self.dns_servers.is_empty() {
            builder = builder.dns_servers(self.dns_servers);
        }
        if let Some(expect) = self.voter {
            builder = builder.voter(expect);
        }
        if let Some(dir) = self.data_dir {
            builder = builder.data_dir(dir);
        }
        Ok(builder.connect_targets(self.connect))
    }
}

impl NodeBuilder {
    /// A builder from the `MALLA_CONFIG` file and `MALLA_*` variables; see
    /// [`NodeConfig`]. Methods called on it override both.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), malla_runtime::Error> {
    /// let node = malla_runtime::NodeBuilder::from_env()?.start().await?;
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Result<NodeBuilder, Error> {
        NodeConfig::from_env()?.builder()
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn file(text: &str) -> Result<NodeConfig, Error> {
        let path = std::env::temp_dir().join(format!("malla-config-{}-{}.toml", std::process::id(), text.len()));
        std::fs::write(&path, text).unwrap();
        let config = NodeConfig::from_file(&path);
        std::fs::remove_file(&path).ok();
        config
    }

    #[test]
    fn the_file_then_the_environment() {
        let config = file(
            r#"
name = "api-1"
cookie = "from-file"
listen = "127.0.0.1:7000"
connect = ["_malla._tcp.example.com"]
gossip_interval_ms = 250
"#,
        )
        .unwrap();
        assert_eq!(config.name.as_deref(), Some("api-1"));
        let env: HashMap<&str, &str> = HashMap::from([
            ("MALLA_COOKIE", "from-env"),
            ("MALLA_CONNECT", "a.example.com:7000, 10.0.0.1:7000"),
            ("MALLA_HIDDEN", "true"),
        ]);
        let config = config
            .with_env_vars(|name| env.get(name).map(|v| v.to_string()))
            .unwrap();
        assert_eq!(config.cookie, Some(Secret::from("from-env")));
        assert_eq!(config.connect, ["a.example.com:7000", "10.0.0.1:7000"]);
        assert_eq!(config.hidden, Some(true));
        assert_eq!(config.gossip_interval_ms, Some(250));
        assert_eq!(config.listen, Some("127.0.0.1:7000".parse().unwrap()));
    }

    #[test]
    fn rotation_sealing_and_limits_come_from_the_file_and_the_environment() {
        let config = file(
            r#"
name = "api-2"
also_accept_cookie_files = ["/run/old-cookie"]
sealing = false
max_handshakes = 64
"#,
        )
        .unwrap();
        assert_eq!(config.also_accept_cookie_files, [PathBuf::from("/run/old-cookie")]);
        assert_eq!((config.sealing, config.max_handshakes), (Some(false), Some(64)));
        let env: HashMap<&str, &str> = HashMap::from([
            ("MALLA_SEALING", "true"),
            ("MALLA_MAX_HANDLERS_PER_CONNECTION", "16"),
            ("MALLA_ALSO_ACCEPT_COOKIE_FILES", "/a, /b"),
        ]);
        let config = config
            .with_env_vars(|name| env.get(name).map(|v| v.to_string()))
            .unwrap();
        assert_eq!(config.sealing, Some(true));
        assert_eq!(config.max_handlers_per_connection, Some(16));
        assert_eq!(
            config.also_accept_cookie_files,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        let err = NodeConfig::default()
            .with_env_vars(|name| (name == "MALLA_MAX_HANDSHAKES").then(|| "many".to_string()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MALLA_MAX_HANDSHAKES=`many` is not a number"), "{err}");
        // A missing accepted-cookie file is named when the builder is made.
        let missing = NodeConfig {
            name: Some("n".into()),
            also_accept_cookie_files: vec!["/nonexistent/cookie".into()],
            ..NodeConfig::default()
        };
        let err = missing.builder().unwrap_err().to_string();
        assert!(err.contains("cannot read the cookie file /nonexistent/cookie"), "{err}");
    }

    #[test]
    fn voters_and_their_data_come_from_the_file_and_the_environment() {
        let config = file("name = \"v1\"\nvoter = 3\ndata_dir = \"/var/lib/malla/v1\"\n").unwrap();
        assert_eq!(config.voter, Some(3));
        assert_eq!(config.data_dir, Some(PathBuf::from("/var/lib/malla/v1")));
        let env: HashMap<&str, &str> = HashMap::from([("MALLA_VOTER", "5"), ("MALLA_DATA_DIR", "/data")]);
        let config = config
            .with_env_vars(|name| env.get(name).map(|v| v.to_string()))
            .unwrap();
        assert_eq!((config.voter, config.data_dir), (Some(5), Some(PathBuf::from("/data"))));
        let err = NodeConfig::default()
            .with_env_vars(|name| (name == "MALLA_VOTER").then(|| "three".to_string()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MALLA_VOTER=`three` is not a number"), "{err}");
    }

    #[test]
    fn mistakes_are_named() {
        let err = file("name = \"a\"\nlisen = \"127.0.0.1:1\"\n").unwrap_err().to_string();
        assert!(err.contains(":2:1: unknown field `lisen`"), "{err}");
        let err = file("name = [\n").unwrap_err().to_string();
        assert!(err.contains(".toml:"), "{err}");
        let err = NodeConfig::default()
            .with_env_vars(|name| (name == "MALLA_LISTEN").then(|| "nowhere".to_string()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid configuration: MALLA_LISTEN=`nowhere` is not an address such as 0.0.0.0:7000"
        );
        let err = NodeConfig::default().builder().unwrap_err().to_string();
        assert!(err.contains("MALLA_NAME"), "{err}");
        let err = NodeConfig::from_file("/nonexistent/malla.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read the config file /nonexistent/malla.toml"),
            "{err}"
        );
    }

    #[test]
    fn the_environments_cookie_beats_the_files_and_one_layer_gives_one() {
        let config = file("name = \"c\"\ncookie = \"inline-cookie-in-the-file\"\n").unwrap();
        assert!(
            !format!("{config:?}").contains("inline-cookie"),
            "never printed: {config:?}"
        );
        let config = config
            .with_env_vars(|name| (name == "MALLA_COOKIE_FILE").then(|| "/run/secrets/c".to_string()))
            .unwrap();
        assert_eq!(
            (config.cookie, config.cookie_file),
            (None, Some(PathBuf::from("/run/secrets/c"))),
            "MALLA_COOKIE_FILE replaces the file's inline cookie"
        );
        let err = file("name = \"c\"\ncookie = \"x\"\ncookie_file = \"/f\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`cookie` and `cookie_file` both set"), "{err}");
        let err = NodeConfig::default()
            .with_env_vars(|name| name.starts_with("MALLA_COOKIE").then(|| "x".to_string()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MALLA_COOKIE and MALLA_COOKIE_FILE both set"), "{err}");
    }
}
