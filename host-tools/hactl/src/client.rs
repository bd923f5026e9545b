//! hactl's side of the management API: which socket to use, and the mapping of the API
//! client's errors ([`ha_mgmt_api::client::ClientError`]) to hactl's exit codes.
//!
//! Two processes answer the API on each member: `ha-daemon` (status, control, events, PSK
//! rotation) on [`ha_mgmt_api::DEFAULT_SOCKET`], and the configuration-sync service
//! (`confsync service`) on [`ha_mgmt_api::DEFAULT_CONFIG_SOCKET`] for the `config_*` requests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ha_mgmt_api::client::ClientError;
use ha_mgmt_api::{ErrorCode, Reply, Request};

use crate::exit::{Code, Failure, Result};

/// How long a request may take before hactl gives up (a sync of 10,000 files or a rolling
/// update streams progress, and every progress line restarts this timer).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Environment variable naming the daemon's management socket (overridden by `--socket`).
pub const SOCKET_ENV: &str = "HA_MGMT_SOCKET";
/// Environment variable naming the configuration-sync socket (overridden by
/// `--config-socket`).
pub const CONFIG_SOCKET_ENV: &str = "HA_CONFIG_SOCKET";

/// The daemon socket: `--socket`, else `$HA_MGMT_SOCKET`, else the daemon's default path.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(ha_mgmt_api::DEFAULT_SOCKET))
}

/// The configuration-sync socket: `--config-socket`, else `$HA_CONFIG_SOCKET`, else the
/// service's default path.
pub fn config_socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(CONFIG_SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(ha_mgmt_api::DEFAULT_CONFIG_SOCKET))
}

/// A connection to a management socket.
pub struct Client {
    inner: ha_mgmt_api::client::Client,
}

impl Client {
    /// Connects to the management socket at `path`.
    pub fn connect(path: &Path) -> Result<Client> {
        ha_mgmt_api::client::Client::connect(path, REPLY_TIMEOUT)
            .map(|inner| Client { inner })
            .map_err(|e| match e {
                ClientError::Unreachable(m) => Failure::new(
                    Code::Unreachable,
                    format!(
                        "{m}; is the service running? (--socket/${SOCKET_ENV}, \
                         --config-socket/${CONFIG_SOCKET_ENV})"
                    ),
                ),
                other => failure(other),
            })
    }

    /// Sends `req` and returns its final reply, or the service's error reply as it is (to
    /// act on its code); only a failure to talk to the service is a [`Failure`].
    pub fn call_api(
        &mut self,
        req: &Request,
    ) -> Result<std::result::Result<Reply, ha_mgmt_api::ApiError>> {
        match self.inner.call(req, |_| {}) {
            Ok(Reply::Error(e)) | Err(ClientError::Api(e)) => Ok(Err(e)),
            Ok(r) => Ok(Ok(r)),
            Err(e) => Err(failure(e)),
        }
    }

    /// Sends `req` and returns its final reply, handing every streamed line to `on_stream`.
    /// An error reply becomes a [`Failure`].
    pub fn call(&mut self, req: &Request, on_stream: impl FnMut(&Reply)) -> Result<Reply> {
        self.inner.call(req, on_stream).map_err(failure)
    }
}

/// Maps a client error to a [`Failure`].
pub fn failure(e: ClientError) -> Failure {
    match e {
        ClientError::Unreachable(m) => Failure::new(Code::Unreachable, m),
        ClientError::Protocol(m) => Failure::new(
            Code::Failed,
            format!("the service sent a reply hactl cannot read: {m}"),
        ),
        ClientError::Api(a) => api_failure(a.code, &a.message),
    }
}

/// Maps an API error to hactl's exit code: refused input is 3, unreachable peers 5,
/// everything else 1.
pub fn api_failure(code: ErrorCode, message: &str) -> Failure {
    let exit = match code {
        ErrorCode::BadRequest | ErrorCode::Refused | ErrorCode::ClusterFull => Code::Refused,
        ErrorCode::Unreachable => Code::Unreachable,
        ErrorCode::NotFound | ErrorCode::Unsupported | ErrorCode::Internal => Code::Failed,
    };
    let class = serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Failure::new(exit, format!("daemon: {message} ({class})"))
}

/// The joining member as the HA member lists need it: its serial and data-plane addresses
/// from its own daemon at `socket`, with `main_link` (`hactl cluster join --ha-address`,
/// checked to be IPv4:PORT).
pub fn joining_member(socket: &Path, main_link: String) -> Result<(String, ha_mgmt_api::HaMember)> {
    if main_link.parse::<std::net::SocketAddrV4>().is_err() {
        return Err(Failure::new(
            Code::Refused,
            format!("--ha-address {main_link:?} is not IPv4:PORT"),
        ));
    }
    let mut c = Client::connect(socket)?;
    let Reply::Info(info) = c.call(&Request::Info { verbose: false }, |_| {})? else {
        return Err(Failure::new(Code::Failed, "the daemon did not answer info"));
    };
    let ha = ha_mgmt_api::HaMember {
        main_link,
        addresses: info.addresses,
    };
    Ok((info.me, ha))
}
