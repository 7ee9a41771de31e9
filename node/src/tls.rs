//! Mutual TLS for the QUIC links between nodes.
//!
//! Both ends present their node certificate and trust only the county CA (the node's
//! `ca.crt`); crypto is ring, passed explicitly, TLS 1.3 only, ALPN [`ALPN`] (frames go
//! through one deflate stream) or, with an older release, [`ALPN_DEFLATED`] (each frame
//! deflated on its own) or [`ALPN_PLAIN`].
//!
//! - The client dials with `server_name = expected_peer_org.dns_name()`, so webpki's name
//!   check ties the server certificate to the office the client expected.
//! - The server requires a client certificate chaining to the CA; [`peer_org`] then reads the
//!   client's office from it.
//!
//! With TLS 1.3 the client's `connect` completes before the server has checked the client
//! certificate: a completed connect is **not** proof of acceptance. Authorise on the server
//! side with [`peer_org`], and have the client wait for a first application message.

use std::sync::Arc;
use std::time::Duration;

use amphi_protocol::OrgPath;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;

use crate::pki::{self, CertError, NodeIdentity};

/// The ALPN protocol id of Amphi's replication protocol whose frames go through one
/// deflate stream for the session ([`amphi_protocol::wire`]). Nodes offer it first, then
/// [`ALPN_DEFLATED`], then [`ALPN_PLAIN`].
pub const ALPN: &[u8] = b"amphi/3";
/// The ALPN protocol id of the same protocol whose frames are deflated each on its own: what
/// releases before the session stream speak.
pub const ALPN_DEFLATED: &[u8] = b"amphi/2";
/// The ALPN protocol id of the same protocol with plain frames only: what releases before
/// deflated frames speak. A node speaks each older protocol with a peer that offers nothing
/// newer, so a county upgrades office by office.
pub const ALPN_PLAIN: &[u8] = b"amphi/1";

/// How frames to a peer are compressed, as agreed at the handshake (a node decodes every
/// way whatever was agreed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCompression {
    /// Plain frames ([`ALPN_PLAIN`]).
    Plain,
    /// Each frame deflated on its own ([`ALPN_DEFLATED`]).
    EachFrame,
    /// One deflate stream for the session ([`ALPN`]).
    Stream,
}

impl FrameCompression {
    /// The deflater for a session's frames, if any.
    pub fn deflater(self) -> Option<amphi_protocol::wire::Deflater> {
        match self {
            FrameCompression::Plain => None,
            FrameCompression::EachFrame => Some(amphi_protocol::wire::Deflater::new()),
            FrameCompression::Stream => Some(amphi_protocol::wire::Deflater::streaming()),
        }
    }
}

/// How frames to the peer of `conn` are compressed (see [`FrameCompression`]).
pub fn frame_compression(conn: &quinn::Connection) -> FrameCompression {
    let protocol = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    match protocol.as_deref() {
        Some(ALPN) => FrameCompression::Stream,
        Some(ALPN_DEFLATED) => FrameCompression::EachFrame,
        _ => FrameCompression::Plain,
    }
}

fn alpn() -> Vec<Vec<u8>> {
    vec![ALPN.to_vec(), ALPN_DEFLATED.to_vec(), ALPN_PLAIN.to_vec()]
}

/// Interval of QUIC keep-alive packets, so idle links and NAT bindings stay open.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A link with no packets for this long is considered dead.
pub const MAX_IDLE_TIMEOUT_MS: u32 = 20_000;

/// What went wrong building a TLS configuration or reading a peer's identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA certificate could not be used as a trust anchor.
    #[error("the CA certificate can not be used as a trust anchor: {0}; check the `ca` file")]
    TrustAnchor(rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("could not set up client certificate verification: {0}")]
    Verifier(rustls::server::VerifierBuilderError),
    /// rustls refused the configuration (for example the node key does not suit the
    /// certificate).
    #[error("could not build the TLS configuration: {0}; check the node's cert and key files")]
    Config(rustls::Error),
    /// The rustls configuration is not usable for QUIC.
    #[error("the TLS configuration can not be used for QUIC: {0}")]
    Quic(quinn::crypto::rustls::NoInitialCipherSuite),
    /// The peer presented no certificate (or the connection is not established yet).
    #[error(
        "the peer presented no certificate; only nodes with a certificate from this county's \
         CA may connect"
    )]
    NoPeerCertificate,
    /// The peer's certificate does not name an office properly.
    #[error("the peer's certificate is not a valid Amphi node certificate: {0}")]
    PeerCert(CertError),
}

/// The transport settings shared by both ends: keep-alive every 5 s, idle timeout 30 s, and
/// streams: the protocol uses exactly one bidirectional stream per connection, so a peer may
/// open at most one bidirectional stream and no unidirectional ones (each stream it could
/// open would be a receive buffer this node holds for it).
fn transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport.max_concurrent_bidi_streams(VarInt::from_u32(1));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    transport.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
        MAX_IDLE_TIMEOUT_MS,
    ))));
    Arc::new(transport)
}

/// A root store holding only this node's CA.
fn roots(id: &NodeIdentity) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(id.ca_der.clone())
        .map_err(TlsError::TrustAnchor)?;
    Ok(Arc::new(roots))
}

/// QUIC server configuration for a node: presents the node certificate, requires a client
/// certificate chaining to the CA (webpki, ring, trust store = the CA only), TLS 1.3 only,
/// ALPN [`ALPN`], [`ALPN_DEFLATED`] or [`ALPN_PLAIN`] (the newest the client offers),
/// keep-alive 5 s, idle timeout 30 s.
pub fn server_config(id: &NodeIdentity) -> Result<quinn::ServerConfig, TlsError> {
    let provider = pki::crypto_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(id)?, provider.clone())
        .build()
        .map_err(TlsError::Verifier)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![id.cert_der.clone()], id.key_der.clone_key())
        .map_err(TlsError::Config)?;
    tls.alpn_protocols = alpn();
    let quic = QuicServerConfig::try_from(Arc::new(tls)).map_err(TlsError::Quic)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// QUIC client configuration for a node: trusts only the CA, presents the node certificate
/// for client authentication, TLS 1.3 only, ALPN [`ALPN`], [`ALPN_DEFLATED`] or
/// [`ALPN_PLAIN`], keep-alive 5 s, idle timeout 30 s.
///
/// Connect with `server_name = expected_peer_org.dns_name()`: the server certificate must
/// then carry that DNS name, i.e. belong to the expected office.
pub fn client_config(id: &NodeIdentity) -> Result<quinn::ClientConfig, TlsError> {
    client_config_speaking(id, alpn())
}

/// [`client_config`], offering the ALPN ids `alpn` (an older release offers only
/// [`ALPN_DEFLATED`] and [`ALPN_PLAIN`], or only [`ALPN_PLAIN`]).
fn client_config_speaking(
    id: &NodeIdentity,
    alpn: Vec<Vec<u8>>,
) -> Result<quinn::ClientConfig, TlsError> {
    let provider = pki::crypto_provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_root_certificates(roots(id)?)
        .with_client_auth_cert(vec![id.cert_der.clone()], id.key_der.clone_key())
        .map_err(TlsError::Config)?;
    tls.alpn_protocols = alpn;
    let quic = QuicClientConfig::try_from(Arc::new(tls)).map_err(TlsError::Quic)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// The peer's leaf certificate (DER), as verified during the handshake (either side). Kept for
/// checking signatures on changes the peer authored.
pub fn peer_cert(conn: &quinn::Connection) -> Result<CertificateDer<'static>, TlsError> {
    let identity = conn.peer_identity().ok_or(TlsError::NoPeerCertificate)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoPeerCertificate)?;
    certs.into_iter().next().ok_or(TlsError::NoPeerCertificate)
}

/// The peer's office, from its verified certificate (either side of an established
/// connection): the `urn:amphi:org:` URI SAN, which must agree with the certificate's DNS SAN
/// (see [`pki::org_of_node_cert`]).
pub fn peer_org(conn: &quinn::Connection) -> Result<OrgPath, TlsError> {
    let der = peer_cert(conn)?;
    pki::org_of_node_cert(&der).map_err(TlsError::PeerCert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE, ca_init, ca_issue};
    use std::net::SocketAddr;
    use std::path::Path;
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(10);

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
    }

    fn node(ca: &Path, dir: &Path, o: &str) -> NodeIdentity {
        ca_issue(ca, &org(o), dir, 30).unwrap();
        NodeIdentity::load(
            &dir.join(NODE_CERT_FILE),
            &dir.join(NODE_KEY_FILE),
            &dir.join(CA_CERT_FILE),
        )
        .unwrap()
    }

    fn server(id: &NodeIdentity) -> (quinn::Endpoint, SocketAddr) {
        let ep =
            quinn::Endpoint::server(server_config(id).unwrap(), "127.0.0.1:0".parse().unwrap())
                .unwrap();
        let addr = ep.local_addr().unwrap();
        (ep, addr)
    }

    fn client_endpoint() -> quinn::Endpoint {
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
    }

    /// Accepts one connection attempt; `Ok(conn)` only if the handshake completed.
    async fn accept_one(ep: &quinn::Endpoint) -> Result<quinn::Connection, String> {
        let incoming = timeout(WAIT, ep.accept())
            .await
            .map_err(|_| "no connection attempt".to_owned())?
            .ok_or("endpoint closed")?;
        match timeout(WAIT, incoming).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("handshake timed out".to_owned()),
        }
    }

    struct Cluster {
        _tmp: tempfile::TempDir,
        town: NodeIdentity,
        bayin: NodeIdentity,
        foreign: NodeIdentity,
    }

    fn cluster() -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        let other_ca = tmp.path().join("other-ca");
        ca_init(&ca, &org("hoboksar")).unwrap();
        ca_init(&other_ca, &org("hoboksar")).unwrap();
        let town = node(&ca, &tmp.path().join("town"), "hoboksar/chagantolgay");
        let bayin = node(
            &ca,
            &tmp.path().join("bayin"),
            "hoboksar/chagantolgay/bayin",
        );
        let foreign = node(
            &other_ca,
            &tmp.path().join("foreign"),
            "hoboksar/chagantolgay/bayin",
        );
        Cluster {
            _tmp: tmp,
            town,
            bayin,
            foreign,
        }
    }

    #[tokio::test]
    async fn nodes_of_one_ca_connect_and_learn_each_others_org() {
        let c = cluster();
        let (server_ep, addr) = server(&c.town);
        let server_task = tokio::spawn(async move {
            let conn = accept_one(&server_ep).await.unwrap();
            let org = peer_org(&conn).unwrap();
            let cert = peer_cert(&conn).unwrap();
            // Answer on a stream so the client knows it was accepted.
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            send.write_all(b"welcome").await.unwrap();
            send.finish().unwrap();
            conn.closed().await;
            (org, cert)
        });

        let client_ep = client_endpoint();
        let conn = client_ep
            .connect_with(
                client_config(&c.bayin).unwrap(),
                addr,
                &c.town.org.dns_name(),
            )
            .unwrap()
            .await
            .unwrap();
        assert_eq!(peer_org(&conn).unwrap(), c.town.org);
        assert_eq!(peer_cert(&conn).unwrap(), c.town.cert_der);
        assert_eq!(
            conn.handshake_data()
                .unwrap()
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .unwrap()
                .protocol,
            Some(ALPN.to_vec())
        );
        let (_send, mut recv) = timeout(WAIT, conn.accept_bi()).await.unwrap().unwrap();
        assert_eq!(recv.read_to_end(64).await.unwrap(), b"welcome");
        conn.close(0u32.into(), b"done");

        let (org_seen, cert_seen) = timeout(WAIT, server_task).await.unwrap().unwrap();
        assert_eq!(org_seen, c.bayin.org);
        assert_eq!(cert_seen, c.bayin.cert_der);
        client_ep.wait_idle().await;
    }

    /// What a node and a peer agree to speak, seen from both ends of the connection.
    async fn agreed(
        client_alpn: Vec<Vec<u8>>,
    ) -> (Option<Vec<u8>>, FrameCompression, FrameCompression) {
        let c = cluster();
        let (server_ep, addr) = server(&c.town);
        let server_task = tokio::spawn(async move {
            let conn = accept_one(&server_ep).await.unwrap();
            let compression = frame_compression(&conn);
            conn.close(0u32.into(), b"done");
            compression
        });
        let client_ep = client_endpoint();
        let config = client_config_speaking(&c.bayin, client_alpn).unwrap();
        let conn = client_ep
            .connect_with(config, addr, &c.town.org.dns_name())
            .unwrap()
            .await
            .unwrap();
        let protocol = conn
            .handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol;
        let client = frame_compression(&conn);
        let server = timeout(WAIT, server_task).await.unwrap().unwrap();
        (protocol, client, server)
    }

    #[tokio::test]
    async fn two_nodes_of_this_release_send_each_other_one_deflate_stream() {
        use FrameCompression::Stream;
        assert_eq!(agreed(alpn()).await, (Some(ALPN.to_vec()), Stream, Stream));
    }

    #[tokio::test]
    async fn a_peer_of_the_last_release_is_sent_frames_deflated_each_on_its_own() {
        // The release before the session stream offers `amphi/2`, then `amphi/1`.
        use FrameCompression::EachFrame;
        assert_eq!(
            agreed(vec![ALPN_DEFLATED.to_vec(), ALPN_PLAIN.to_vec()]).await,
            (Some(ALPN_DEFLATED.to_vec()), EachFrame, EachFrame)
        );
    }

    #[tokio::test]
    async fn a_peer_of_an_older_release_is_sent_plain_frames() {
        // Releases before deflated frames offer only `amphi/1`.
        use FrameCompression::Plain;
        assert_eq!(
            agreed(vec![ALPN_PLAIN.to_vec()]).await,
            (Some(ALPN_PLAIN.to_vec()), Plain, Plain)
        );
    }

    #[tokio::test]
    async fn a_peer_may_open_one_bidirectional_stream_and_no_unidirectional_ones() {
        let c = cluster();
        let (server_ep, addr) = server(&c.town);
        let server_task = tokio::spawn(async move {
            let conn = accept_one(&server_ep).await.unwrap();
            let (_send, mut recv) = conn.accept_bi().await.unwrap();
            let mut hello = [0u8; 5];
            recv.read_exact(&mut hello).await.unwrap();
            conn.closed().await;
        });
        let client_ep = client_endpoint();
        let conn = client_ep
            .connect_with(
                client_config(&c.bayin).unwrap(),
                addr,
                &c.town.org.dns_name(),
            )
            .unwrap()
            .await
            .unwrap();
        let (mut send, _recv) = timeout(WAIT, conn.open_bi()).await.unwrap().unwrap();
        send.write_all(b"hello").await.unwrap();
        let short = Duration::from_millis(500);
        assert!(
            timeout(short, conn.open_bi()).await.is_err(),
            "a second bidirectional stream is not granted"
        );
        assert!(
            timeout(short, conn.open_uni()).await.is_err(),
            "no unidirectional stream is granted"
        );
        conn.close(0u32.into(), b"done");
        timeout(WAIT, server_task).await.unwrap().unwrap();
        client_ep.wait_idle().await;
    }

    #[tokio::test]
    async fn server_refuses_a_client_from_another_ca() {
        let c = cluster();
        let (server_ep, addr) = server(&c.town);
        let server_task = tokio::spawn(async move { accept_one(&server_ep).await.map(|_| ()) });

        // The rogue client trusts the real CA (so it accepts the server) but its own
        // certificate comes from another CA.
        let mut rogue = c.foreign.clone();
        rogue.ca_der = c.town.ca_der.clone();
        let client_ep = client_endpoint();
        let connecting = client_ep
            .connect_with(client_config(&rogue).unwrap(), addr, &c.town.org.dns_name())
            .unwrap();
        // With TLS 1.3 the client's connect may complete before the server refuses; either way
        // the connection must end in an error, never carry data.
        if let Ok(Ok(conn)) = timeout(WAIT, connecting).await {
            let closed = timeout(WAIT, async {
                if let Ok((mut send, _recv)) = conn.open_bi().await {
                    let _ = send.write_all(b"hello").await;
                    let _ = send.finish();
                }
                conn.closed().await
            })
            .await;
            assert!(
                closed.is_ok(),
                "client connection must be closed by the server"
            );
        }
        let accepted = timeout(WAIT, server_task).await.unwrap().unwrap();
        assert!(
            accepted.is_err(),
            "server must not accept a client of another CA"
        );
    }

    #[tokio::test]
    async fn server_refuses_a_client_without_certificate() {
        let c = cluster();
        let (server_ep, addr) = server(&c.town);
        let server_task = tokio::spawn(async move { accept_one(&server_ep).await.map(|_| ()) });

        let provider = pki::crypto_provider();
        let mut roots = RootCertStore::empty();
        roots.add(c.town.ca_der.clone()).unwrap();
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let config =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(Arc::new(tls)).unwrap()));
        let client_ep = client_endpoint();
        let connecting = client_ep
            .connect_with(config, addr, &c.town.org.dns_name())
            .unwrap();
        let _ = timeout(WAIT, connecting).await;
        let accepted = timeout(WAIT, server_task).await.unwrap().unwrap();
        assert!(
            accepted.is_err(),
            "server must not accept an anonymous client"
        );
    }

    #[tokio::test]
    async fn client_refuses_a_server_of_the_wrong_org() {
        let c = cluster();
        let (server_ep, addr) = server(&c.town);
        let server_task = tokio::spawn(async move { accept_one(&server_ep).await.map(|_| ()) });

        // The client expects bayin at this address, but the town answers.
        let client_ep = client_endpoint();
        let result = timeout(
            WAIT,
            client_ep
                .connect_with(
                    client_config(&c.bayin).unwrap(),
                    addr,
                    &c.bayin.org.dns_name(),
                )
                .unwrap(),
        )
        .await
        .unwrap();
        let err = result.unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );
        let accepted = timeout(WAIT, server_task).await.unwrap().unwrap();
        assert!(accepted.is_err());
    }

    #[tokio::test]
    async fn client_refuses_a_server_of_another_ca() {
        let c = cluster();
        // The foreign server claims bayin's name, but its certificate is from another CA.
        let (server_ep, addr) = server(&c.foreign);
        let server_task = tokio::spawn(async move { accept_one(&server_ep).await.map(|_| ()) });
        let client_ep = client_endpoint();
        let result = timeout(
            WAIT,
            client_ep
                .connect_with(
                    client_config(&c.town).unwrap(),
                    addr,
                    &c.foreign.org.dns_name(),
                )
                .unwrap(),
        )
        .await
        .unwrap();
        assert!(result.is_err());
        let accepted = timeout(WAIT, server_task).await.unwrap().unwrap();
        assert!(accepted.is_err());
    }

    #[test]
    fn configs_build_with_ring_only() {
        let c = cluster();
        server_config(&c.town).unwrap();
        client_config(&c.town).unwrap();
    }
}
