//! Certificates for the peers: a throw-away CA, a server and a client certificate, and the
//! rustls configurations built from them.
//!
//! colony brings its own [`colony::ClusterCa`]; tonic and the raw quinn loop get the same kind
//! of setup from here: ECDSA P-256 keys (what colony issues), TLS 1.3 on the ring provider, and
//! a client certificate checked by the server (mutual TLS, as colony always does).

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// The name in the server certificate, and the one clients check.
pub(crate) const SERVER_NAME: &str = "localhost";

/// Boxed error used by the set-up code.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

const FILES: [&str; 5] = [
    "peer-ca.pem",
    "peer-server.pem",
    "peer-server.key",
    "peer-client.pem",
    "peer-client.key",
];

/// A CA and the two certificates it issued, all PEM.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    /// The CA certificate both sides trust.
    pub(crate) ca_cert: String,
    /// The server's certificate.
    pub(crate) server_cert: String,
    /// The server's private key (PKCS#8).
    pub(crate) server_key: String,
    /// The client's certificate.
    pub(crate) client_cert: String,
    /// The client's private key (PKCS#8).
    pub(crate) client_key: String,
}

fn leaf(name: &str, usage: ExtendedKeyUsagePurpose) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    Ok(params)
}

impl Pki {
    /// Makes a fresh CA and issues a server and a client certificate.
    pub(crate) fn generate() -> Result<Self, rcgen::Error> {
        let mut ca_params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "colony-bench peer CA");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let server_key = KeyPair::generate()?;
        let server_cert = leaf("bench-server", ExtendedKeyUsagePurpose::ServerAuth)?
            .signed_by(&server_key, &issuer)?;
        let client_key = KeyPair::generate()?;
        let client_cert = leaf("bench-client", ExtendedKeyUsagePurpose::ClientAuth)?
            .signed_by(&client_key, &issuer)?;
        Ok(Self {
            ca_cert: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        })
    }

    fn parts(&self) -> [&str; 5] {
        [
            &self.ca_cert,
            &self.server_cert,
            &self.server_key,
            &self.client_cert,
            &self.client_key,
        ]
    }

    /// Writes the five PEM files into `dir` (for a child server to read).
    pub(crate) fn write(&self, dir: &Path) -> std::io::Result<()> {
        for (name, text) in FILES.iter().zip(self.parts()) {
            std::fs::write(dir.join(name), text)?;
        }
        Ok(())
    }

    /// Reads what [`write`](Self::write) wrote.
    pub(crate) fn read(dir: &Path) -> std::io::Result<Self> {
        let read = |i: usize| std::fs::read_to_string(dir.join(FILES[i]));
        Ok(Self {
            ca_cert: read(0)?,
            server_cert: read(1)?,
            server_key: read(2)?,
            client_cert: read(3)?,
            client_key: read(4)?,
        })
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, BoxError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_cert.as_bytes()) {
            roots.add(cert?)?;
        }
        Ok(Arc::new(roots))
    }

    /// TLS 1.3 on ring, presenting the server certificate and requiring a client certificate.
    pub(crate) fn rustls_server(&self, alpn: &[u8]) -> Result<rustls::ServerConfig, BoxError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone()).build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                certs(&self.server_cert)?,
                PrivateKeyDer::from_pem_slice(self.server_key.as_bytes())?,
            )?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }

    /// TLS 1.3 on ring, trusting only the CA and presenting the client certificate.
    pub(crate) fn rustls_client(&self, alpn: &[u8]) -> Result<rustls::ClientConfig, BoxError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(
                certs(&self.client_cert)?,
                PrivateKeyDer::from_pem_slice(self.client_key.as_bytes())?,
            )?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, BoxError> {
    Ok(CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_configs_build() {
        let pki = Pki::generate().unwrap();
        let dir = std::env::temp_dir().join(format!("colony-bench-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        pki.write(&dir).unwrap();
        let again = Pki::read(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(again.parts(), pki.parts());
        assert!(again.server_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        let server = again.rustls_server(b"x").unwrap();
        assert_eq!(server.alpn_protocols, vec![b"x".to_vec()]);
        again.rustls_client(b"x").unwrap();
    }
}
