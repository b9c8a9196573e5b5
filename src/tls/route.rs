//! TLS for routes: always mutual. The accepting node requires the dialing
//! node's certificate and verifies it against the cluster's `ca_file`; the
//! dialing node presents the same certificate and verifies the accepting
//! node's certificate and name (the route URL's host name or IP) against
//! that CA. A client certificate issued by another CA (the client CA) is
//! therefore refused on the route port.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{TlsError, TlsOptions, load_certs, load_key, load_roots, provider_for, versions_for};

/// The acceptor for the route port: `verify` is forced on, so a dialer
/// without a certificate from `ca_file` fails the handshake.
pub fn route_acceptor(opts: &TlsOptions) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    if opts.ca_file.is_none() {
        return Err(TlsError::Option(
            "route TLS is mutual: cluster tls needs ca_file".into(),
        ));
    }
    let mut o = opts.clone();
    o.verify = true;
    Ok(tokio_rustls::TlsAcceptor::from(super::server_config(&o)?))
}

/// The connector for solicited routes: presents `cert_file` and verifies
/// the peer against `ca_file`.
pub fn route_connector(opts: &TlsOptions) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let ca = opts
        .ca_file
        .as_deref()
        .ok_or_else(|| TlsError::Option("route TLS is mutual: cluster tls needs ca_file".into()))?;
    let provider = Arc::new(provider_for(opts)?);
    let versions = versions_for(opts, &provider)?;
    let roots = load_roots(ca)?;
    let certs = load_certs("cert_file", &opts.cert_file)?;
    let key = load_key(&opts.key_file)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Config(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("route certificate: {e}")))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Run the client side of a route handshake with a deadline, verifying the
/// peer's certificate for `host` (a DNS name or an IP address).
pub async fn connect<IO>(
    connector: &tokio_rustls::TlsConnector,
    host: &str,
    io: IO,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| TlsError::Option(format!("route host {host:?}: {e}")))?;
    match tokio::time::timeout(timeout, connector.connect(name, io)).await {
        Err(_) => Err(TlsError::HandshakeTimeout),
        Ok(Err(e)) => Err(TlsError::Handshake(e.to_string())),
        Ok(Ok(s)) => Ok(s),
    }
}
