//! What a connect target may be, and how it is written.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::Error;

/// Where to look for other nodes.
///
/// | written | is |
/// |---|---|
/// | `10.0.0.7:7000`, `[::1]:7000` | that node |
/// | `malla.example.com:7000` | every A and AAAA record of the name, on that port |
/// | `_malla._tcp.example.com`, `srv:nodes.example.com` | every target of the SRV record, on its port |
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnectTarget {
    /// One address.
    Addr(SocketAddr),
    /// A name whose address records are nodes listening on `port`.
    Host {
        /// The DNS name.
        host: String,
        /// The port every node listens on.
        port: u16,
    },
    /// An SRV name: targets and ports come from the answer.
    Srv(String),
}

impl FromStr for ConnectTarget {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let invalid = |why: &str| Error::Config(format!("invalid connect target `{text}`: {why}"));
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(ConnectTarget::Addr(addr));
        }
        if let Some(name) = text.strip_prefix("srv:") {
            return valid_name(name)
                .map(|()| ConnectTarget::Srv(name.to_owned()))
                .map_err(|e| invalid(&e));
        }
        if text.starts_with('_') && !text.contains(':') {
            return valid_name(text)
                .map(|()| ConnectTarget::Srv(text.to_owned()))
                .map_err(|e| invalid(&e));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(invalid(
                "expected `host:port`, an SRV name such as `_malla._tcp.example.com`, or `srv:name`",
            ));
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid("the port is not a number from 0 to 65535"))?;
        valid_name(host).map_err(|e| invalid(&e))?;
        Ok(ConnectTarget::Host {
            host: host.to_owned(),
            port,
        })
    }
}

fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("a DNS name has 1 to 253 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!("{c:?} cannot appear in a DNS name"));
    }
    Ok(())
}

impl fmt::Display for ConnectTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectTarget::Addr(addr) => write!(f, "{addr}"),
            ConnectTarget::Host { host, port } => write!(f, "{host}:{port}"),
            ConnectTarget::Srv(name) if name.starts_with('_') => f.write_str(name),
            ConnectTarget::Srv(name) => write!(f, "srv:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print_back() {
        for (text, expected) in [
            ("127.0.0.1:7000", ConnectTarget::Addr("127.0.0.1:7000".parse().unwrap())),
            ("[::1]:7000", ConnectTarget::Addr("[::1]:7000".parse().unwrap())),
            (
                "malla.default.svc:7000",
                ConnectTarget::Host {
                    host: "malla.default.svc".into(),
                    port: 7000,
                },
            ),
            (
                "_malla._tcp.example.com",
                ConnectTarget::Srv("_malla._tcp.example.com".into()),
            ),
            ("srv:nodes.example.com", ConnectTarget::Srv("nodes.example.com".into())),
        ] {
            let parsed: ConnectTarget = text.parse().unwrap();
            assert_eq!(parsed, expected);
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        for (text, why) in [
            ("example.com", "expected `host:port`"),
            ("example.com:99999", "port is not a number"),
            ("exa mple.com:80", "' ' cannot appear"),
            ("srv:", "1 to 253 characters"),
        ] {
            let err = text.parse::<ConnectTarget>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains(&format!("`{text}`")), "{err}");
        }
    }
}
